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
