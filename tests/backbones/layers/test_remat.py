"""jsplade.backbones.layers.remat: ``remat_layers`` against the plain Python loop over the same layers — outputs,
gradients (per-layer parameters and input), with and without per-layer keys — and what the
differentiated program recomputes (counted in its jaxpr): the layer body once more in the backward pass, and
not the values named in ``save_names``.

Tolerance: 1e-6 relative to the largest |value| (``max_rel``); under jit the two are observed bit-identical.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.fixtures import max_rel
from jax.ad_checkpoint import checkpoint_name
from jax.extend import core as jex_core

from jsplade.backbones.layers.norm import Norm
from jsplade.backbones.layers.remat import remat_layers

D, N_LAYERS = 8, 3
HIGHEST = jax.lax.Precision.HIGHEST


class Block(nnx.Module):
    def __init__(self, rng: np.random.Generator):
        self.kernel = nnx.Param(jnp.asarray(rng.standard_normal((D, D)) / np.sqrt(D), jnp.float32))
        self.bias = nnx.Param(jnp.asarray(0.1 * rng.standard_normal(D), jnp.float32))
        self.norm = Norm(D, 1e-6)
        # non-trivial norm parameters, different per layer
        self.norm.scale.set_value(jnp.asarray(1.0 + 0.1 * rng.standard_normal(D), jnp.float32))
        self.norm.bias.set_value(jnp.asarray(0.1 * rng.standard_normal(D), jnp.float32))


def run_layer(layer: Block, x, key):
    h = jnp.sin(jnp.dot(x, layer.kernel[...], precision=HIGHEST) + layer.bias[...])
    h = checkpoint_name(h, "inner")
    if key is not None:  # a per-layer value read from the layer's key (as dropout would draw from it)
        h = h * (1.0 + 0.1 * (jax.random.key_data(key)[-1] % 7).astype(h.dtype))
    return layer.norm(x + h * h)


def _setup():
    rng = np.random.default_rng(0)
    stack = nnx.List([Block(rng) for _ in range(N_LAYERS)])
    x = jnp.asarray(rng.standard_normal((4, 5, D)), jnp.float32)
    cot = jnp.asarray(rng.standard_normal((4, 5, D)), jnp.float32)
    return stack, x, cot


def _keys(with_keys: bool):
    return [jax.random.key(100 + i) if with_keys else None for i in range(N_LAYERS)]


def _loop(layers, x, keys):
    for layer, key in zip(layers, keys):
        x = run_layer(layer, x, key)
    return x


def _loss(graphdef, remat: bool, keys, cot, save_names=()):
    def loss(state, x):
        layers = list(nnx.merge(graphdef, state))
        out = remat_layers(layers, x, run_layer, keys, save_names) if remat else _loop(layers, x, keys)
        return jnp.sum(out * cot)
    return loss


@pytest.mark.parametrize("with_keys", [False, True], ids=["no-keys", "layer-keys"])
def test_values_and_gradients_equal_the_plain_loop(with_keys):
    stack, x, cot = _setup()
    keys = _keys(with_keys)
    graphdef, state = nnx.split(stack)

    def forward_and_grads(remat: bool):
        def run(state, x):
            def f(state, x):
                layers = list(nnx.merge(graphdef, state))
                return remat_layers(layers, x, run_layer, keys) if remat else _loop(layers, x, keys)
            out, pullback = jax.vjp(f, state, x)
            return out, pullback(cot)
        return jax.jit(run)(state, x)

    out_loop, g_loop = forward_and_grads(False)
    out_remat, g_remat = forward_and_grads(True)
    assert out_remat.shape == x.shape
    assert max_rel(out_remat, out_loop) < 1e-6
    if with_keys:  # the keys reach the layers: they changed the result
        without = jax.jit(lambda state, x: _loop(list(nnx.merge(graphdef, state)), x, _keys(False)))(state, x)
        assert max_rel(out_loop, without) > 1e-2
    # the gradient keeps the one-module-per-layer layout (the stacking inside is undone)
    assert jax.tree.structure(g_remat) == jax.tree.structure(g_loop)
    flat_loop, flat_remat = jax.tree.leaves(g_loop), jax.tree.leaves(g_remat)
    assert len(flat_loop) == 1 + N_LAYERS * 4  # x, and kernel, bias, norm scale, norm bias per layer
    for a, b in zip(flat_loop, flat_remat):
        assert a.shape == b.shape
        assert max_rel(b, a) < 1e-6
    assert max_rel(g_loop[0][1]["kernel"].get_value(), g_loop[0][0]["kernel"].get_value()) > 1e-3  # per layer


def test_layers_are_left_untouched():
    stack, x, _ = _setup()
    before = jax.tree.map(np.asarray, nnx.state(stack))
    remat_layers(list(stack), x, run_layer, _keys(False))
    after = jax.tree.map(np.asarray, nnx.state(stack))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def _count(jaxpr, primitive: str) -> int:
    """Occurrences of ``primitive`` in a jaxpr and every jaxpr nested in it (scan, remat, pjit bodies)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == primitive
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(sub, jex_core.ClosedJaxpr):
                    n += _count(sub.jaxpr, primitive)
                elif isinstance(sub, jex_core.Jaxpr):
                    n += _count(sub, primitive)
    return n


def test_backward_recomputes_the_layer_except_the_saved_names():
    stack, x, cot = _setup()
    graphdef, state = nnx.split(stack)
    keys = _keys(False)

    def sines(remat, save_names=()):
        jaxpr = jax.make_jaxpr(jax.grad(_loss(graphdef, remat, keys, cot, save_names)))(state, x)
        return _count(jaxpr.jaxpr, "sin"), _count(jaxpr.jaxpr, "scan")

    assert sines(False) == (N_LAYERS, 0)  # unrolled loop: one sin per layer, kept for the backward
    # one scan body for the forward and one for the backward, which evaluates sin again (rematerialised)
    assert sines(True) == (2, 2)
    # the named value is saved: the backward no longer evaluates sin
    assert sines(True, ("inner",)) == (1, 2)
    assert sines(True, ("some_other_name",)) == (2, 2)
