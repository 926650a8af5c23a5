"""One process of the multi-host encoding test: ``jax_num_cpu_devices`` CPU devices, then ``jsplade-encode``
with the remaining arguments (``--coordinator`` etc. given by the test). Prints the peak RSS (KiB) last."""

import resource
import sys

import jax

jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))

from jsplade.cli.encode import main  # noqa: E402

rc = main(sys.argv[2:])
print(f"peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
sys.exit(rc)
