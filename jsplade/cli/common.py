"""Small pieces every jsplade command-line program shares: logging set-up and one-line errors."""

from __future__ import annotations

import argparse
import logging
import re
import sys

LOG_FORMAT = "%(levelname)s %(message)s"


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' informational logging (JAX, orbax, absl)")


def setup_logging(verbose: bool = False) -> None:
    """Quiet by default: jsplade's own INFO messages and every library's warnings and errors; with
    ``verbose`` the libraries' INFO chatter too (JAX's backend probing, orbax's checkpoint manager, absl)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT, force=True)
    logging.getLogger("jsplade").setLevel(logging.INFO)
    if verbose:
        _unquiet_libraries()
    else:
        quiet_libraries()


def quiet_libraries() -> None:
    """orbax logs routine warnings through absl (its async machinery, metadata stores); keep the terminal for
    results and real errors."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with orbax
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


def _unquiet_libraries() -> None:
    """Undo ``quiet_libraries`` (a verbose run after a quiet one in the same process)."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO)
    except ImportError:  # pragma: no cover - absl comes with orbax
        pass
    logging.getLogger("absl").setLevel(logging.NOTSET)


def error_line(exc: BaseException) -> str:
    """The exception's message on one line (hub errors span several)."""
    return re.sub(r"\s*\n\s*", " ", str(exc)).strip() or type(exc).__name__


def run_program(prog: str, parser: argparse.ArgumentParser, run, argv: list[str] | None) -> int:
    """Parse ``argv`` with ``parser`` (``--verbose`` from ``add_verbose_flag``), set up logging and call
    ``run(args)``; bad input (ValueError, TypeError, OSError) is one line ``PROG: error: …`` and exit code 2."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return run(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        return 2
