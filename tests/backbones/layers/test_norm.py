"""jsplade.backbones.layers.norm: ``Norm`` against torch.nn.LayerNorm / torch.nn.RMSNorm (values and gradients),
a float64 numpy formula for the two-pass variance, and a torch formula of the reference's bfloat16 RMSNorm.

Tolerances: float32 values 1e-6 relative to the array's largest |value| (``max_rel``; observed ≤ 2e-7),
float32 gradients 2e-6 (observed ≤ 2.5e-7); the two-pass case 1e-4 against float64 (observed 1.6e-5); bfloat16
LayerNorm within one bfloat16 rounding (2⁻⁸ relative) of float32 torch, bfloat16 RMSNorm within one bfloat16 ulp
(2⁻⁷ relative) of the torch formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers.fixtures import max_rel

from jsplade.backbones.layers.norm import NORM_KINDS, Norm

D = 48


def _inputs(seed: int, shape=(3, 7, D)):
    rng = np.random.default_rng(seed)
    x = (1.5 * rng.standard_normal(shape) + 0.3).astype(np.float32)
    scale = (1.0 + 0.2 * rng.standard_normal(shape[-1])).astype(np.float32)
    bias = (0.1 * rng.standard_normal(shape[-1])).astype(np.float32)
    return x, scale, bias


def _norm(kind: str, eps: float, scale, bias=None) -> Norm:
    norm = Norm(D, eps, kind)
    norm.scale.set_value(jnp.asarray(scale))
    if bias is not None:
        norm.bias.set_value(jnp.asarray(bias))
    return norm


def _torch_norm(kind: str, eps: float, scale, bias=None) -> torch.nn.Module:
    if kind == "layer_norm":
        mod = torch.nn.LayerNorm(D, eps=eps)
        mod.bias.data = torch.from_numpy(bias)
    else:
        mod = torch.nn.RMSNorm(D, eps=eps)
    mod.weight.data = torch.from_numpy(scale)
    return mod


def test_kinds_and_parameters():
    assert NORM_KINDS == ("layer_norm", "rms_norm")
    ln, rms = Norm(D, 1e-5, "layer_norm"), Norm(D, 1e-5, "rms_norm")
    np.testing.assert_array_equal(ln.scale[...], np.ones(D, np.float32))
    np.testing.assert_array_equal(ln.bias[...], np.zeros(D, np.float32))
    assert ln.scale[...].dtype == jnp.float32 and ln.bias[...].dtype == jnp.float32
    assert not hasattr(rms, "bias")  # RMSNorm has a scale only
    assert Norm(D, 1e-5).kind == "layer_norm"  # the default kind


def test_unknown_kind_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"norm kind must be one of \('layer_norm', 'rms_norm'\), got 'batch_norm'"):
        Norm(D, 1e-5, "batch_norm")


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layer_norm_matches_torch(eps):
    x, scale, bias = _inputs(0)
    ours = _norm("layer_norm", eps, scale, bias)(jnp.asarray(x))
    ref = _torch_norm("layer_norm", eps, scale, bias)(torch.from_numpy(x)).detach().numpy()
    assert ours.dtype == jnp.float32 and ours.shape == x.shape
    assert max_rel(ours, ref) < 1e-6


@pytest.mark.parametrize("eps", [1e-12, 1e-6])
def test_rms_norm_matches_torch(eps):
    x, scale, _ = _inputs(1)
    ours = _norm("rms_norm", eps, scale)(jnp.asarray(x))
    ref = _torch_norm("rms_norm", eps, scale)(torch.from_numpy(x)).detach().numpy()
    assert ours.dtype == jnp.float32
    assert max_rel(ours, ref) < 1e-6


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_gradients_match_torch_autograd(kind):
    x, scale, bias = _inputs(2, (4, 5, D))
    cot = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    has_bias = kind == "layer_norm"
    graphdef, state = nnx.split(_norm(kind, 1e-6, scale, bias if has_bias else None))

    def loss(x, state):
        return jnp.sum(nnx.merge(graphdef, state)(x) * cot)

    gx, gstate = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), state)

    tx = torch.from_numpy(x).requires_grad_(True)
    mod = _torch_norm(kind, 1e-6, scale, bias if has_bias else None)
    (mod(tx) * torch.from_numpy(cot)).sum().backward()
    assert max_rel(gx, tx.grad.numpy()) < 2e-6
    assert max_rel(gstate["scale"].get_value(), mod.weight.grad.numpy()) < 2e-6
    if has_bias:
        assert max_rel(gstate["bias"].get_value(), mod.bias.grad.numpy()) < 2e-6
    else:
        assert "bias" not in gstate


def test_layer_norm_variance_is_two_pass():
    """Inputs far from zero (offset 100, unit spread): the float32 two-pass variance Σ(x − x̄)²/n stays close to
    the float64 result; the one-pass E[x²] − x̄² loses ~3 digits there (checked below, so the case has bite)."""
    rng = np.random.default_rng(4)
    x = (100.0 + rng.standard_normal((16, D))).astype(np.float32)
    eps = 1e-12
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + eps)
    ours = Norm(D, eps)(jnp.asarray(x))
    tol = 1e-4  # observed 1.6e-5 (torch.nn.LayerNorm: 9e-6)
    assert max_rel(ours, ref) < tol
    mean = x.mean(-1, keepdims=True, dtype=np.float32)
    one_pass_var = (x * x).mean(-1, keepdims=True, dtype=np.float32) - mean * mean
    one_pass = (x - mean) / np.sqrt(np.maximum(one_pass_var, 0) + np.float32(eps))
    assert max_rel(one_pass, ref) > 10 * tol


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_constant_row_is_finite(kind):
    """Zero variance: eps keeps the result finite — LayerNorm gives the bias, RMSNorm of a zero row gives 0."""
    _, scale, bias = _inputs(5)
    has_bias = kind == "layer_norm"
    norm = _norm(kind, 1e-12, scale, bias if has_bias else None)
    x = np.full((2, D), 3.25 if has_bias else 0.0, np.float32)
    out = np.asarray(norm(jnp.asarray(x)))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.broadcast_to(bias if has_bias else np.zeros(D, np.float32), x.shape),
                               rtol=0, atol=1e-7)


def test_layer_norm_bfloat16_is_float32_math_rounded_once():
    x, scale, bias = _inputs(6)
    xb = jnp.asarray(x).astype(jnp.bfloat16)
    out = _norm("layer_norm", 1e-6, scale, bias)(xb)
    assert out.dtype == jnp.bfloat16
    x_in = torch.from_numpy(np.array(xb.astype(jnp.float32)))  # the bfloat16 input, exactly, in float32
    ref = _torch_norm("layer_norm", 1e-6, scale, bias)(x_in).detach().numpy()
    diff = np.abs(np.asarray(out.astype(jnp.float32)) - ref)
    assert np.all(diff <= 2.0 ** -8 * np.abs(ref) + 1e-6)


def test_rms_norm_bfloat16_casts_before_the_weight_like_the_reference():
    """The reference RMSNorm (new-impl / LLaMA style): normalise in float32, cast to the input dtype, then multiply
    by the weight in that dtype — written here in torch."""
    x, scale, _ = _inputs(7)
    eps = 1e-6
    xb = jnp.asarray(x).astype(jnp.bfloat16)
    out = _norm("rms_norm", eps, scale)(xb)
    assert out.dtype == jnp.bfloat16
    tx = torch.from_numpy(np.array(xb.astype(jnp.float32))).to(torch.bfloat16)
    t32 = tx.float()
    normed = (t32 * torch.rsqrt(t32.pow(2).mean(-1, keepdim=True) + eps)).to(torch.bfloat16)
    ref = (torch.from_numpy(scale).to(torch.bfloat16) * normed).float().numpy()
    got = np.asarray(out.astype(jnp.float32))
    # two bfloat16 roundings on each side; rsqrt may differ in the last float32 bit, so allow one ulp
    assert np.all(np.abs(got - ref) <= 2.0 ** -7 * np.abs(ref) + 1e-6)
    assert np.mean(got == ref) > 0.95  # nearly all elements bit-identical
