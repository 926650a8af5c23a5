"""Shared by the program tests: every program's ``main()`` sets up the process's logging (``-v``, library
levels), so each test gets the logging state back as it found it."""

from __future__ import annotations

import logging

import pytest
from absl import logging as absl_logging

LOGGERS = ("jsplade", "orbax", "absl", "jax")


@pytest.fixture(autouse=True)
def _keep_logging_state():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    verbosity = absl_logging.get_verbosity()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    absl_logging.set_verbosity(verbosity)
