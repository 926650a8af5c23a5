"""Test-session set-up. Shared helpers live in ``tests/helpers/`` (importable as ``helpers``)."""

from __future__ import annotations

import jax

# Eight host devices for the sharding tests (meshes 8, 2x4, 2x2x2); single-device code uses device 0.
jax.config.update("jax_num_cpu_devices", 8)
