"""Pieces shared by the command-line programs (jsplade.cli.common)."""

from __future__ import annotations

import logging

from jsplade.cli.common import error_line, quiet_libraries


def test_error_line_joins_lines_and_names_empty_errors():
    assert error_line(OSError("repo not found:\n  hub said 404 \n try again")) == \
        "repo not found: hub said 404 try again"
    assert error_line(KeyError()) == "KeyError"


def test_quiet_libraries_silences_absl_warnings():
    logging.getLogger("absl").setLevel(logging.WARNING)
    quiet_libraries()
    assert logging.getLogger("absl").level == logging.ERROR


def test_a_verbose_set_up_after_a_quiet_one_lets_library_info_through_again():
    from absl import logging as absl_logging

    from jsplade.cli.common import setup_logging

    before = absl_logging.get_verbosity(), logging.getLogger("absl").level, logging.getLogger().level
    try:
        setup_logging(False)
        assert logging.getLogger("absl").level == logging.ERROR
        setup_logging(True)
        assert absl_logging.get_verbosity() == absl_logging.INFO
        assert logging.getLogger("absl").getEffectiveLevel() == logging.INFO
    finally:
        absl_logging.set_verbosity(before[0])
        logging.getLogger("absl").setLevel(before[1])
        logging.getLogger().setLevel(before[2])
