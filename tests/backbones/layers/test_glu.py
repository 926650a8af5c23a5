"""The GLU MLP's forms against each other and against autodiff: the gated unit's written-out backward, the
column-blocked encoding form, token blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import max_rel

from jsplade.backbones.layers import glu
from jsplade.backbones.layers.activations import activation
from jsplade.backbones.layers.dropout import dropout
from jsplade.backbones.layers.glu import gated_unit, glu_mlp


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "silu", "relu"])
@pytest.mark.parametrize("rate", [0.0, 0.25])
def test_gated_unit_backward_matches_autodiff(act, rate):
    """The GLU's hand-written backward (both halves written into the [.., 2, I] projection layout)
    equals autodiff of dropout(act(gate) · up), mask included."""
    rng = np.random.default_rng(len(act))
    ug = jnp.asarray(rng.standard_normal((2, 7, 2, 12)) * 2, jnp.float32)
    cot = jnp.asarray(rng.standard_normal((2, 7, 12)), jnp.float32)
    key = jax.random.key(3) if rate else None

    def plain(ug):
        return dropout(activation(act)(ug[:, :, 1]) * ug[:, :, 0], rate, key)

    ours = gated_unit(ug, key, act, rate)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(plain(ug)))
    g_ours = jax.jit(jax.grad(lambda u: jnp.sum(gated_unit(u, key, act, rate) * cot)))(ug)
    g_plain = jax.grad(lambda u: jnp.sum(plain(u) * cot))(ug)
    assert max_rel(g_ours, g_plain) < 1e-6
    if rate:
        assert float(jnp.mean(g_ours == 0)) > 0.1  # dropped elements get no gradient


def test_column_blocks_are_the_whole_mlp_with_its_gradients(monkeypatch):
    """Encoding on CPUs runs the up/gate projection in blocks of ``MLP_COLUMN_BLOCK`` intermediate columns
    (shrunk here, with a ragged last block): more products, the same values; differentiated, the whole
    form's gradients."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    up_gate = jnp.asarray(rng.standard_normal((8, 2, 20)), jnp.float32)
    down, bias = jnp.asarray(rng.standard_normal((20, 8)), jnp.float32), jnp.asarray(rng.standard_normal(8), jnp.float32)
    monkeypatch.setattr(glu, "MLP_COLUMN_BLOCK", 6)  # 6 + 6 + 6 + 2 columns
    args = (x, up_gate, down, bias)
    blocked = lambda *a: glu._glu_mlp(*a, "gelu", "highest")
    whole = lambda *a: glu._glu_mlp_whole(*a, "gelu", "highest")
    n_dots = lambda f: str(jax.make_jaxpr(f)(*args)).count("dot_general")
    assert n_dots(blocked) == n_dots(whole) + 3  # four up/gate blocks instead of one product
    assert max_rel(jax.jit(blocked)(*args), whole(*args)) < 1e-6
    cot = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    g_blocked = jax.grad(lambda *a: jnp.sum(blocked(*a) * cot), argnums=(0, 1, 2, 3))(*args)
    g_whole = jax.grad(lambda *a: jnp.sum(whole(*a) * cot), argnums=(0, 1, 2, 3))(*args)
    for a, b in zip(g_blocked, g_whole):
        assert max_rel(a, b) < 1e-6



def test_dropout_goes_to_the_gated_unit_only_with_a_key_and_a_rate():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    up_gate = jnp.asarray(rng.standard_normal((8, 2, 20)), jnp.float32)
    down, bias = jnp.asarray(rng.standard_normal((20, 8)), jnp.float32), jnp.zeros(8, jnp.float32)
    key = jax.random.key(0)
    plain = glu_mlp(x, up_gate, down, bias, "gelu")
    np.testing.assert_array_equal(np.asarray(glu_mlp(x, up_gate, down, bias, "gelu", dropout_key=key)), np.asarray(plain))
    dropped = glu_mlp(x, up_gate, down, bias, "gelu", dropout_key=key, dropout_rate=0.5)
    ug = jnp.einsum("bld,dki->blki", x, up_gate, precision="highest")
    want = jnp.einsum("bli,id->bld", dropout(activation("gelu")(ug[..., 1, :]) * ug[..., 0, :], 0.5, key), down,
                      precision="highest")
    assert max_rel(dropped, want) < 1e-6 and max_rel(dropped, plain) > 0.1

