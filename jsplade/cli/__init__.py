"""Command-line programs (thin wrappers live in ``train/`` and ``convert/``; logic in the library)."""
