"""jsplade.backbones.layers.init: ``normal`` draws float32 N(0, std²) of the requested shape from the ``params``
stream of an ``nnx.Rngs``: a Kolmogorov–Smirnov test against scipy's standard normal, exact linearity in ``std``
(float32 scaling of the same draw), independence from the other streams, and the stream advancing per call.
"""

from __future__ import annotations

import numpy as np
from flax import nnx
from scipy import stats

from jsplade.backbones.layers.init import normal


def test_shape_dtype_and_distribution():
    draw = np.asarray(normal(nnx.Rngs(0), (200, 150), 0.02))
    assert draw.shape == (200, 150) and draw.dtype == np.float32
    result = stats.kstest(draw.reshape(-1) / 0.02, "norm")
    assert result.pvalue > 1e-3, result  # 30 000 draws: a wrong scale or mean would give p ≈ 0
    assert stats.kstest(draw.reshape(-1) / 0.03, "norm").pvalue < 1e-6  # the test can tell a 1.5× scale error


def test_std_scales_the_same_draw_exactly():
    unit = np.asarray(normal(nnx.Rngs(7), (16, 4), 1.0))
    scaled = np.asarray(normal(nnx.Rngs(7), (16, 4), 0.125))
    np.testing.assert_array_equal(scaled, unit * np.float32(0.125))


def test_draws_come_from_the_params_stream_only():
    a = normal(nnx.Rngs(params=3, dropout=0), (16, 4), 1.0)
    b = normal(nnx.Rngs(params=3, dropout=99), (16, 4), 1.0)
    c = normal(nnx.Rngs(params=4, dropout=0), (16, 4), 1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rngs = nnx.Rngs(params=3, dropout=5)
    dropout_before = rngs.dropout.count[...]
    normal(rngs, (16, 4), 1.0)
    assert rngs.dropout.count[...] == dropout_before  # the dropout stream is not consumed


def test_successive_calls_give_new_draws_and_a_seed_repeats_them():
    rngs = nnx.Rngs(11)
    first, second = normal(rngs, (16, 4), 1.0), normal(rngs, (16, 4), 1.0)
    assert not np.array_equal(first, second)
    fresh = nnx.Rngs(11)
    np.testing.assert_array_equal(normal(fresh, (16, 4), 1.0), first)
    np.testing.assert_array_equal(normal(fresh, (16, 4), 1.0), second)
