"""Convert sparse encoders between sentence-transformers directories and jsplade checkpoints (see --help)."""
import sys

from jsplade.cli.convert import main

sys.exit(main())
