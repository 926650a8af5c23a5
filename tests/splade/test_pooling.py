"""SPLADE pooling (``jsplade.splade.pooling``) against two independent references on the same float32 logits:

* numpy formulas written here: a(x) = log1p(relu(x)) (``relu``) or log1p(log1p(relu(x))) (``log1p_relu``),
  d_j = max_t or Σ_t of a(logits[t, j]) over the unmasked tokens t (masked tokens excluded, an all-masked row
  pools to 0), evaluated in float64;
* sentence-transformers' ``SpladePooling`` module (torch, eval mode).

Tolerance: rtol 1e-6 with atol 1e-7 (float32 log1p in XLA, numpy and torch may differ by an ulp; the sums
over at most 12 tokens add a few more). The module's claim that the max strategy (pool first, activate
once) equals activating every position and then pooling is checked bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sentence_transformers.sparse_encoder.modules.splade_pooling import SpladePooling

from jsplade.splade.pooling import check_pooling, splade_activation, splade_pool

RTOL, ATOL = 1e-6, 1e-7
CASES = [(s, a) for s in ("max", "sum") for a in ("relu", "log1p_relu")]


def _reference_activation(x: np.ndarray, activation: str) -> np.ndarray:
    y = np.log1p(np.maximum(np.asarray(x, np.float64), 0.0))
    return np.log1p(y) if activation == "log1p_relu" else y


def _reference_pool(logits: np.ndarray, mask: np.ndarray, strategy: str, activation: str) -> np.ndarray:
    b, _, v = logits.shape
    out = np.zeros((b, v), np.float64)
    for i in range(b):
        kept = logits[i][np.asarray(mask[i]) != 0]  # the unmasked tokens only
        if kept.shape[0] == 0:
            continue
        act = _reference_activation(kept, activation)
        out[i] = act.max(axis=0) if strategy == "max" else act.sum(axis=0)
    return out


def _batch(seed: int = 0, b: int = 5, length: int = 12, v: int = 64):
    """Logits [B, L, V] with masked positions holding huge values (they would win the max if they leaked),
    a row whose unmasked logits are all negative and a fully masked row."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((b, length, v)) * 3).astype(np.float32)
    mask = np.ones((b, length), np.int32)
    mask[1, 7:] = 0
    mask[2, ::3] = 0  # holes, not only trailing padding
    mask[3, 4:] = 0
    logits[3, :4] = -np.abs(logits[3, :4]) - 0.1
    mask[4] = 0
    logits[mask == 0] = 1e30
    return logits, mask


def _st_pool(logits: np.ndarray, mask: np.ndarray, strategy: str, activation: str) -> np.ndarray:
    module = SpladePooling(pooling_strategy=strategy, activation_function=activation).eval()
    with torch.no_grad():
        out = module({"token_embeddings": torch.from_numpy(logits.copy()),
                      "attention_mask": torch.from_numpy(mask.astype(np.int64))})
    return out["sentence_embedding"].numpy()


# ----------------------------------------------------------------------------- activation
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_activation_formula(activation):
    x = np.concatenate([np.linspace(-10, 10, 201), [0.0, -0.0, 1e-30, 1e-8, 3e4, 3e38, -3e38]]).astype(np.float32)
    got = np.asarray(splade_activation(jnp.asarray(x), activation))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_activation(x, activation), rtol=RTOL, atol=ATOL)
    assert np.all(got[x <= 0] == 0)
    assert np.asarray(splade_activation(jnp.asarray([-np.inf, np.inf], jnp.float32), activation)).tolist() == \
        [0.0, np.inf]


def test_activation_default_is_two_log1ps():
    x = jnp.asarray([0.5, 2.0, 100.0], jnp.float32)
    np.testing.assert_array_equal(np.asarray(splade_activation(x)), np.asarray(splade_activation(x, "log1p_relu")))
    np.testing.assert_allclose(np.asarray(splade_activation(x)), np.log1p(np.log1p([0.5, 2.0, 100.0])), rtol=RTOL)


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("strategy, activation", CASES)
def test_pool_equals_the_numpy_formula(strategy, activation):
    logits, mask = _batch(1)
    got = np.asarray(splade_pool(jnp.asarray(logits), jnp.asarray(mask), strategy, activation))
    assert got.shape == (5, 64) and got.dtype == np.float32
    want = _reference_pool(logits, mask, strategy, activation)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.all(got[3] == 0) and np.all(got[4] == 0)  # only negative logits / no token at all
    assert got.max() < 30  # no masked 1e30 leaked (a(1e30) is about 69 for relu, 4.2 for log1p_relu)


@pytest.mark.parametrize("strategy, activation", CASES)
def test_pool_equals_sentence_transformers(strategy, activation):
    logits, mask = _batch(2)
    logits[mask == 0] = 0.0  # ST multiplies by the mask: finite padding, as a real MLM produces
    logits[1, 7:] = 50.0  # large but finite masked logits are multiplied away in ST, excluded here
    got = np.asarray(splade_pool(jnp.asarray(logits), jnp.asarray(mask), strategy, activation))
    np.testing.assert_allclose(got, _st_pool(logits, mask, strategy, activation), rtol=RTOL, atol=ATOL)


def test_defaults_are_max_and_log1p_relu():
    logits, mask = _batch(3)
    np.testing.assert_array_equal(np.asarray(splade_pool(jnp.asarray(logits), mask)),
                                  np.asarray(splade_pool(jnp.asarray(logits), mask, "max", "log1p_relu")))


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_max_pools_first_and_activates_once_bitwise(activation):
    """The module pools the raw logits then activates; activating every position first gives the same bits."""
    logits, mask = _batch(4, b=6, length=33, v=257)
    keep = jnp.asarray(mask != 0)[:, :, None]
    every = jnp.max(jnp.where(keep, splade_activation(jnp.asarray(logits), activation), 0.0), axis=1)
    got = splade_pool(jnp.asarray(logits), jnp.asarray(mask), "max", activation)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(every))


@pytest.mark.parametrize("strategy", ["max", "sum"])
def test_mask_values_other_than_one_and_mask_dtypes(strategy):
    """Any non-zero mask entry counts as a token (bool, int, float masks agree)."""
    logits, mask = _batch(5)
    base = np.asarray(splade_pool(jnp.asarray(logits), jnp.asarray(mask), strategy))
    for variant in (mask.astype(bool), mask.astype(np.float32), mask * 3):
        np.testing.assert_array_equal(np.asarray(splade_pool(jnp.asarray(logits), jnp.asarray(variant), strategy)),
                                      base)


def test_sum_of_a_repeated_token_counts_every_position():
    logits = np.zeros((1, 4, 3), np.float32)
    logits[0, :, 1] = 2.0
    mask = np.array([[1, 1, 1, 0]])
    got = np.asarray(splade_pool(jnp.asarray(logits), mask, "sum", "relu"))
    np.testing.assert_allclose(got[0], [0.0, 3 * np.log1p(2.0), 0.0], rtol=RTOL)
    got_max = np.asarray(splade_pool(jnp.asarray(logits), mask, "max", "relu"))
    np.testing.assert_allclose(got_max[0], [0.0, np.log1p(2.0), 0.0], rtol=RTOL)


def test_pool_under_jit_and_gradient_of_max():
    logits, mask = _batch(6)
    fn = jax.jit(splade_pool, static_argnums=(2, 3))
    for strategy, activation in CASES:
        np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(logits), mask, strategy, activation)),
                                      np.asarray(splade_pool(jnp.asarray(logits), mask, strategy, activation)))
    # masked positions get no gradient
    x = jnp.asarray(np.where(mask[:, :, None] == 0, 5.0, logits), jnp.float32)
    grad = np.asarray(jax.grad(lambda z: jnp.sum(splade_pool(z, mask, "max", "relu")))(x))
    assert np.all(grad[mask == 0] == 0) and np.any(grad[mask != 0] != 0)


# ----------------------------------------------------------------------------- bad options
def test_check_pooling():
    for strategy, activation in CASES:
        check_pooling(strategy, activation)
    with pytest.raises(ValueError, match=r"pooling_strategy must be one of \('max', 'sum'\), got 'mean'"):
        check_pooling("mean", "relu")
    with pytest.raises(ValueError, match=r"activation_function must be one of \('relu', 'log1p_relu'\), got 'gelu'"):
        check_pooling("max", "gelu")
    logits, mask = _batch(7)
    with pytest.raises(ValueError, match="pooling_strategy"):
        splade_pool(jnp.asarray(logits), mask, "MAX")
    with pytest.raises(ValueError, match="activation_function"):
        splade_pool(jnp.asarray(logits), mask, "sum", "softplus")
