"""Small pieces every jsplade command-line program shares."""

from __future__ import annotations

import logging
import re


def quiet_libraries() -> None:
    """orbax logs routine warnings through absl; keep the terminal for results and real errors."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with orbax
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


def error_line(exc: BaseException) -> str:
    """The exception's message on one line (hub errors span several)."""
    return re.sub(r"\s*\n\s*", " ", str(exc)).strip() or type(exc).__name__
