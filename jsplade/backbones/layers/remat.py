"""Per-layer rematerialisation of an encoder's layer stack, as a ``lax.scan`` over the stacked layer weights.

The layer inputs are kept for the backward pass (and whatever the checkpoint names in ``save_names``
mark, e.g. the blockwise attention's output and softmax statistics); the rest of each layer's
activations are recomputed there. A scan (not a Python loop of ``jax.checkpoint`` calls) because
XLA:CPU schedules unrolled checkpointed layers as if nothing were rematerialised (measured: identical
temporary memory with and without); a loop body is recomputed one iteration at a time on every backend.
The parameter layout (one module per layer) is unchanged: the stacking happens inside the traced
function and its gradient unstacks.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def remat_layers(layers: Sequence[nnx.Module], x, run_layer: Callable, layer_keys: Sequence,
                 save_names: tuple[str, ...] = ()):
    """``x`` through ``run_layer(layer, x, key)`` for every layer (all of one structure) and its key (all
    ``None`` or all keys), rematerialised per layer; values saved for the backward: the layer inputs and
    the checkpoint names in ``save_names``."""
    split = [nnx.split(layer) for layer in layers]
    graphdef, states = split[0][0], [state for _, state in split]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    keys = None if layer_keys[0] is None else jnp.stack(list(layer_keys))

    policy = jax.checkpoint_policies.save_only_these_names(*save_names) if save_names else None

    @functools.partial(jax.checkpoint, prevent_cse=False, policy=policy)
    def body(carry, slice_):
        state, key = slice_
        return run_layer(nnx.merge(graphdef, state), carry, key), None

    out, _ = jax.lax.scan(body, x, (stacked, keys))
    return out
