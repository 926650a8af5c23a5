"""The fixtures' seeded "recipe" weights (tests/fixtures/README.md), for tests and benchmarks.

For each new-impl state-dict key of the config (tied decoder weight excluded) in sorted order:
z = RandomState(seed).standard_normal(shape); value = 1 + 0.1·z for norm weights, else 0.02·z; float32.
"""

from __future__ import annotations

import numpy as np

from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.gte import GTE

_NORM_WEIGHT_SUFFIXES = ("LayerNorm.weight", "attn_ln.weight", "mlp_ln.weight", "lm_head.norm.weight")


def recipe_shapes(config: GteConfig) -> dict[str, tuple[int, ...]]:
    """New-impl key → shape, exactly the keys the reference checkpoint stores."""
    return GTE.hf_shapes(config, "new")


def recipe_state_dict(config: GteConfig, seed: int) -> dict[str, np.ndarray]:
    """The recipe weights under new-impl names (float32)."""
    rs = np.random.RandomState(seed)
    out: dict[str, np.ndarray] = {}
    for key, shape in sorted(recipe_shapes(config).items()):
        z = rs.standard_normal(size=shape)
        value = 1.0 + 0.1 * z if key.endswith(_NORM_WEIGHT_SUFFIXES) else 0.02 * z
        out[key] = value.astype(np.float32)
    return out
