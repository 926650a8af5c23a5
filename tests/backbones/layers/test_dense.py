"""jsplade.backbones.layers.dense: the model's projections with a hand-written backward pass — the same values and
gradients as autodiff of the einsum, without the transposed weight-gradient layout on XLA:CPU."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import max_rel

from jsplade.backbones.layers.dense import dense

# (x shape, kernel shape, n_in, einsum): every projection of the model has one of these forms.
CASES = [
    ((2, 5, 8), (8, 3, 2, 4), 1, "bld,dthk->blthk"),   # packed q/k/v
    ((2, 5, 2, 4), (2, 4, 8), 2, "blhk,hkd->bld"),     # attention output
    ((2, 5, 8), (8, 2, 6), 1, "bld,dti->blti"),        # GLU up/gate
    ((2, 5, 6), (6, 8), 1, "bli,id->bld"),             # GLU down
    ((7, 8), (8, 3), 1, "td,de->te"),                  # a 2-d input
]


@pytest.mark.parametrize("x_shape,k_shape,n_in,spec", CASES)
def test_values_and_gradients_match_autodiff_of_einsum(x_shape, k_shape, n_in, spec):
    rng = np.random.default_rng(len(spec))
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    want = jnp.einsum(spec, x, kernel, precision=hi)
    cot = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
    got = dense(x, kernel, n_in, precision=hi)
    assert got.shape == want.shape
    assert max_rel(got, want) < 1e-6
    g_want = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w, precision=hi) * cot), argnums=(0, 1))(x, kernel)
    g_got = jax.jit(jax.grad(lambda x, w: jnp.sum(dense(x, w, n_in, precision=hi) * cot), argnums=(0, 1)))(x, kernel)
    for a, b in zip(g_got, g_want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert max_rel(a, b) < 1e-5


def test_bfloat16_operands_give_bfloat16_gradients_close_to_float32():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((4, 16, 32)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((32, 2, 24)), jnp.float32) * 0.1

    def loss(x, w, dtype):
        return jnp.sum(dense(x.astype(dtype), w.astype(dtype)).astype(jnp.float32) ** 2)

    g16 = jax.grad(loss, argnums=(0, 1))(x, kernel, jnp.bfloat16)
    g32 = jax.grad(loss, argnums=(0, 1))(x, kernel, jnp.float32)
    assert dense(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    for a, b in zip(g16, g32):
        assert a.dtype == jnp.float32  # the casts outside dense carry the gradient back to float32
        assert max_rel(a, b) < 3e-2  # bfloat16 operands: 8-bit mantissas


@pytest.mark.parametrize("x_shape,k_shape,n_in,spec", CASES)
@pytest.mark.parametrize("jit", [False, True])
def test_bfloat16_every_projection_form_runs_and_matches_float32_math(x_shape, k_shape, n_in, spec, jit):
    """bfloat16 operands (float32 accumulation, one rounding), eager and compiled: the forward and both
    gradients equal the float32 products of the same bfloat16 values, rounded to bfloat16."""
    rng = np.random.default_rng(len(spec) + 10)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal(k_shape), jnp.bfloat16)
    cot = jnp.asarray(rng.standard_normal(jnp.einsum(spec, x, kernel).shape), jnp.bfloat16)
    fwd = jax.jit(dense, static_argnums=2) if jit else dense
    out = fwd(x, kernel, n_in)
    assert out.dtype == jnp.bfloat16
    hi = jax.lax.Precision.HIGHEST
    f32 = lambda t: t.astype(jnp.float32)
    want = jnp.einsum(spec, f32(x), f32(kernel), precision=hi)
    assert max_rel(out, want) < 1e-2  # one bfloat16 rounding of the float32 result
    grad = jax.grad(lambda x, w: jnp.sum(f32(dense(x, w, n_in)) * f32(cot)), argnums=(0, 1))
    g = (jax.jit(grad) if jit else grad)(x, kernel)
    g_want = jax.grad(lambda x, w: jnp.sum(jnp.einsum(spec, x, w, precision=hi) * f32(cot)), argnums=(0, 1))(
        f32(x), f32(kernel))
    for a, b in zip(g, g_want):
        assert a.dtype == jnp.bfloat16
        assert max_rel(a, b) < 1e-2


def test_mixed_dtypes_promote_like_einsum():
    x = jnp.ones((3, 4), jnp.bfloat16)
    kernel = jnp.ones((4, 5), jnp.float32)
    out = dense(x, kernel)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.full((3, 5), 4.0, np.float32))


def test_shape_errors_are_specific():
    with pytest.raises(ValueError, match="last 1 axes of x"):
        dense(jnp.ones((3, 4)), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="n_in=3"):
        dense(jnp.ones((3, 4)), jnp.ones((4, 2)), n_in=3)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's compiled layout")
def test_weight_gradient_needs_no_output_sized_transpose_on_cpu():
    """What the hand-written backward is for: autodiff's form makes XLA:CPU copy the [tokens, out]
    output gradient into an [out, tokens] buffer; this one does not (checked in the compiled program)."""
    tokens, d_in, d_out = 512, 64, 384
    x = jnp.ones((2, tokens // 2, d_in))
    kernel = jnp.ones((d_in, 2, d_out // 2))
    cot = jnp.ones((2, tokens // 2, 2, d_out // 2))

    def hlo(f):
        step = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * cot), argnums=(0, 1)))
        return step.lower(x, kernel).compile().as_text()

    transposed = re.compile(rf"f32\[{d_out},{tokens}\]")
    assert transposed.search(hlo(lambda x, w: jnp.einsum("bld,dti->blti", x, w)))  # autodiff's layout
    assert not transposed.search(hlo(dense))
