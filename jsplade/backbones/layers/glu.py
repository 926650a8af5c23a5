"""The gated (GLU) MLP: ``down(act(gate) · up) + bias`` from one packed up/gate projection [D, 2, I]
(index 0 = up, 1 = gate), with its dropout, a written-out backward and two faster forms of the
dropout-free MLP (column blocks for encoding on CPUs; token blocks for long inputs are
``jsplade.backbones.layers.token_blocks``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jsplade.backbones.layers.activations import activation
from jsplade.backbones.layers.dense import dense
from jsplade.backbones.layers.dropout import dropout

# Columns of the up/gate projection per block in the encoding path on CPUs (see ``_glu_mlp``).
MLP_COLUMN_BLOCK = 768


def glu_mlp(x, up_gate, down, down_bias, act: str, precision=None, dropout_key=None, dropout_rate: float = 0.0):
    """The GLU MLP without its output dropout: x [B, L, D] (or [T, D]), up_gate [D, 2, I], down [I, D],
    down_bias [D]; dropout on the gated unit only with a key and a positive rate."""
    if dropout_key is None or dropout_rate <= 0.0:
        return _glu_mlp(x, up_gate, down, down_bias, act, precision)
    return _glu_mlp_whole(x, up_gate, down, down_bias, act, precision, dropout_key, float(dropout_rate))


def _glu_mlp_whole(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act: str, prec, glu_key=None, rate=0.0):
    ug_BxLx2xI = dense(x_BxLxD, up_gate_Dx2xI, precision=prec)
    glu_BxLxI = gated_unit(ug_BxLx2xI, glu_key, act, rate)
    return dense(glu_BxLxI, down_IxD, precision=prec) + down_bias_D


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _glu_mlp(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act: str, prec):
    """The dropout-free GLU MLP. Where nothing is differentiated (encoding) on a CPU, the up/gate
    projection runs in blocks of ``MLP_COLUMN_BLOCK`` intermediate columns, each block's GLU applied to
    it at once, and the down projection takes the joined result: XLA:CPU's float32 kernel runs the
    [tokens, 768] · [768, 2·768] products faster than one [tokens, 768] · [768, 6144] product (one v3-gte
    layer at 32 × 176 tokens on the 2-core CPU: 436 instead of 484 ms). Same values (each output column
    is the same dot product). Differentiated, it is the whole-matrix form (the blocked form's backward
    was slower) and its gradients."""
    intermediate = up_gate_Dx2xI.shape[-1]
    if jax.default_backend() != "cpu" or intermediate <= MLP_COLUMN_BLOCK:
        return _glu_mlp_whole(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act, prec)
    blocks = [gated_unit(dense(x_BxLxD, up_gate_Dx2xI[:, :, i:i + MLP_COLUMN_BLOCK], precision=prec), None, act, 0.0)
              for i in range(0, intermediate, MLP_COLUMN_BLOCK)]
    return dense(jnp.concatenate(blocks, axis=-1), down_IxD, precision=prec) + down_bias_D


def _glu_mlp_fwd(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act, prec):
    return jax.vjp(functools.partial(_glu_mlp_whole, act=act, prec=prec), x_BxLxD, up_gate_Dx2xI, down_IxD,
                   down_bias_D)


def _glu_mlp_bwd(act, prec, pullback, g_BxLxD):
    return pullback(g_BxLxD)


_glu_mlp.defvjp(_glu_mlp_fwd, _glu_mlp_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def gated_unit(up_gate: jnp.ndarray, key, act: str, rate: float) -> jnp.ndarray:
    """dropout(act(gate) · up) from the up/gate projection [..., 2, I] (index 0 = up, 1 = gate).

    The backward pass is written out so that both halves of the gradient are produced by one fused
    loop straight into the [..., 2, I] layout of the projection (autodiff builds it from two padded
    halves and an add, and evaluates the mask and the activation's derivative in separate passes).
    """
    up, gate = up_gate[..., 0, :], up_gate[..., 1, :]
    return dropout(activation(act)(gate) * up, rate, key)


def _gated_unit_fwd(ug_Tx2xI, key, act, rate):
    return gated_unit(ug_Tx2xI, key, act, rate), (ug_Tx2xI, key)


def _gated_unit_bwd(act, rate, residuals, g_TxI):
    ug_Tx2xI, key = residuals
    up, gate = ug_Tx2xI[..., 0, :], ug_Tx2xI[..., 1, :]
    g_TxI = dropout(g_TxI.astype(up.dtype), rate, key)  # the mask's transpose is the mask
    act_gate, act_slope = jax.jvp(activation(act), (gate,), (jnp.ones_like(gate),))
    return jnp.stack([g_TxI * act_gate, g_TxI * up * act_slope], axis=-2), None


gated_unit.defvjp(_gated_unit_fwd, _gated_unit_bwd)
