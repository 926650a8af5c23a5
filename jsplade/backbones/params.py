"""Flat views of an NNX model's parameters: ``{"layers.0.attention.qkv_kernel": array, ...}``.

The dotted paths are the ones ``jsplade.backbones.weight_map`` names; checkpoint I/O, the converters and the
trainer all speak this flat form.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def path_str(path) -> str:
    return ".".join(str(p) for p in path)


def flat_params(model: nnx.Module) -> dict[str, jax.Array]:
    """Every ``nnx.Param`` of ``model`` by dotted path (arrays are not copied)."""
    state = nnx.state(model, nnx.Param)
    return {path_str(path): var.get_value() for path, var in nnx.to_flat_state(state)}


def flat_state_dict(state) -> dict[str, jax.Array]:
    """Same flat view for an already split ``nnx.State`` (e.g. the trainer's params)."""
    return {path_str(path): var.get_value() if hasattr(var, "get_value") else var
            for path, var in nnx.to_flat_state(state)}


def assign_params(model: nnx.Module, values: Mapping[str, np.ndarray | jax.Array], *, strict: bool = True,
                  dtype=jnp.float32) -> None:
    """Write ``values`` into the model's parameters in place (shapes must match exactly)."""
    state = nnx.state(model, nnx.Param)
    flat = list(nnx.to_flat_state(state))
    known = {path_str(p) for p, _ in flat}
    if strict:
        missing = sorted(known - set(values))
        extra = sorted(set(values) - known)
        if missing or extra:
            raise ValueError(f"parameter names do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for path, var in flat:
        name = path_str(path)
        if name not in values:
            continue
        new = jnp.asarray(values[name], dtype=dtype)
        if tuple(new.shape) != tuple(var.get_value().shape):
            raise ValueError(f"parameter {name!r}: shape {list(new.shape)} does not match the model's "
                             f"{list(var.get_value().shape)}")
        var.set_value(new)
    nnx.update(model, state)


def build_with_params(constructor: Callable[[], nnx.Module], values: Mapping[str, np.ndarray]) -> nnx.Module:
    """Construct a module abstractly (no random init of large tensors) and fill it with ``values``."""
    abstract = nnx.eval_shape(constructor)
    graphdef, abstract_state = nnx.split(abstract)
    flat = []
    missing = []
    for path, var in nnx.to_flat_state(abstract_state):
        name = path_str(path)
        if isinstance(var, nnx.Param):
            if name not in values:
                missing.append(name)
                continue
            value = jnp.asarray(values[name], dtype=jnp.float32)
            if tuple(value.shape) != tuple(var.get_value().shape):
                raise ValueError(f"parameter {name!r}: shape {list(value.shape)} does not match "
                                 f"{list(var.get_value().shape)}")
            flat.append((path, var.replace(value)))
        else:
            flat.append((path, var))
    if missing:
        raise ValueError(f"missing parameters: {missing[:8]}")
    extra = sorted(set(values) - {path_str(p) for p, v in flat if isinstance(v, nnx.Param)})
    if extra:
        raise ValueError(f"unexpected parameters: {extra[:8]}")
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def count_parameters(model: nnx.Module) -> int:
    """Unique trainable parameters (a tied decoder weight is not a parameter of its own, so counted once)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
