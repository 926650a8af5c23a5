"""The reference trainer's optimizer in optax: torch gradient clipping → torch AdamW (§5.5).

``make_optimizer`` = [zero the gradients of frozen parameters] → ``clip_by_global_norm_torch`` →
``adamw_torch``, with the learning-rate schedule evaluated at the optimizer's own update count
(0 for the first update: with the linear warm-up that update uses lr 0, yet the moments and the count
still advance, exactly like ``torch.optim.AdamW`` driven by ``LambdaLR``).

torch semantics reproduced (and tested against torch in tests/training/test_optim.py):

* clipping: norm = ‖(‖g_1‖, …, ‖g_n‖)‖₂ over the trainable tensors; every gradient is multiplied by
  min(1, max_norm / (norm + 1e-6)) (optax.clip_by_global_norm instead rescales only when norm > max_norm
  and divides by the norm without the 1e-6);
* AdamW: m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², bias corrections c1 = 1−β1^t, c2 = 1−β2^t
  (t = update count starting at 1), θ ← θ·(1 − lr·wd) − (lr/c1)·m / (√v/√c2 + ε): ε outside the
  square root, decoupled weight decay. c1, c2 are evaluated as −expm1(t·ln β) so that float32 keeps
  them to ~1e-7 relative (1 − β2^t in float32 loses ~1e-5 at t = 1).

Parameter paths are dotted strings ("mlm.layers.0.attention.qkv_kernel", "query.weight"): dict keys,
sequence indices and attribute names joined by ".", with the ``.value`` of an ``nnx.Variable`` dropped.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Collection, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["global_norm", "clip_by_global_norm_torch", "TorchClipState", "adamw_torch", "AdamWTorchState",
           "make_optimizer", "param_path", "param_paths", "last_grad_norm"]

Schedule = Callable[[Any], Any]
FreezeSpec = Callable[[str], bool] | Collection[str] | None


# --------------------------------------------------------------------------- paths
def param_path(key_path: tuple) -> str:
    """Dotted name of one leaf from its JAX key path (``.value`` of an nnx.Variable dropped)."""
    parts: list[str] = []
    for key in key_path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if len(parts) > 1 and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and parts[-1] in ("value", "raw_value"):
        parts.pop()
    return ".".join(parts)


def param_paths(tree) -> list[str]:
    """Dotted names of every leaf of ``tree``, in ``jax.tree.leaves`` order."""
    return [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _prefix_matches(path: str, prefix: str) -> bool:
    """Component-wise prefix: "mlm" and "mlm." match "mlm.x" but not "mlm2.x"."""
    p = prefix.rstrip(".")
    return path == p or path.startswith(p + ".")


def _frozen_predicate(freeze: FreezeSpec) -> Callable[[str], bool] | None:
    if freeze is None:
        return None
    if callable(freeze):
        def predicate(path: str) -> bool:
            result = freeze(path)
            if not isinstance(result, (bool, jnp.bool_)) and result not in (0, 1):
                raise TypeError(f"freeze predicate must return a bool, got {type(result).__name__} for {path!r}")
            return bool(result)
        return predicate
    if isinstance(freeze, (str, bytes)) or not isinstance(freeze, Collection):
        raise TypeError("freeze must be a predicate path -> bool or a collection of path prefixes, "
                        f"got {type(freeze).__name__}")
    prefixes = list(freeze)
    for p in prefixes:
        if not isinstance(p, str) or not p.strip("."):
            raise TypeError(f"freeze prefixes must be non-empty strings, got {p!r}")
    return lambda path: any(_prefix_matches(path, p) for p in prefixes)


def _check_multipliers(lr_multipliers: Mapping[str, float] | None) -> dict[str, float]:
    if lr_multipliers is None:
        return {}
    if not isinstance(lr_multipliers, Mapping):
        raise TypeError(f"lr_multipliers must be a mapping path prefix -> factor, got {type(lr_multipliers).__name__}")
    out: dict[str, float] = {}
    for prefix, factor in lr_multipliers.items():
        if not isinstance(prefix, str) or not prefix.strip("."):
            raise TypeError(f"lr_multipliers keys must be non-empty path prefixes, got {prefix!r}")
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(factor) or factor < 0:
            raise ValueError(f"lr_multipliers[{prefix!r}] must be a finite number >= 0, got {factor!r}")
        out[prefix] = float(factor)
    return out


def _leaf_plan(paths: list[str], frozen: Callable[[str], bool] | None,
               multipliers: dict[str, float]) -> list[float | None]:
    """Per leaf: None (frozen) or the learning-rate factor (longest matching prefix, default 1)."""
    unused = [p for p in multipliers if not any(_prefix_matches(path, p) for path in paths)]
    if unused:
        raise ValueError(f"lr_multipliers prefix(es) {unused} match no parameter (parameters start with "
                         f"{sorted({p.split('.')[0] for p in paths})[:8]})")
    plan: list[float | None] = []
    by_length = sorted(multipliers, key=lambda p: len(p.rstrip(".")), reverse=True)
    for path in paths:
        if frozen is not None and frozen(path):
            plan.append(None)
            continue
        factor = 1.0
        for prefix in by_length:
            if _prefix_matches(path, prefix):
                factor = multipliers[prefix]
                break
        plan.append(factor)
    return plan


# --------------------------------------------------------------------------- clipping
def global_norm(tree) -> jnp.ndarray:
    """‖(‖leaf_1‖₂, …, ‖leaf_n‖₂)‖₂ of the floating-point leaves (torch ``clip_grad_norm_``'s norm).

    Accumulates in float32 (float64 leaves stay float64); an empty tree gives 0.
    """
    norms = []
    for leaf in jax.tree.leaves(tree):
        x = jnp.asarray(leaf)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            continue
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        norms.append(jnp.sqrt(jnp.sum(x * x)))
    if not norms:
        return jnp.zeros((), jnp.float32)
    dtype = jnp.result_type(*norms)
    stacked = jnp.stack([n.astype(dtype) for n in norms])
    return jnp.sqrt(jnp.sum(stacked * stacked))


class TorchClipState(NamedTuple):
    """``grad_norm``: the global norm of the last gradients seen, before clipping (0 before any update)."""

    grad_norm: jnp.ndarray


def clip_by_global_norm_torch(max_norm: float = 1.0, eps: float = 1e-6) -> optax.GradientTransformation:
    """g ← g · min(1, max_norm / (‖g‖ + eps)) for every leaf (torch ``clip_grad_norm_``).

    The pre-clip norm is kept in the state (``TorchClipState.grad_norm``; see ``last_grad_norm``).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not math.isfinite(max_norm) \
            or max_norm <= 0:
        raise ValueError(f"max_norm must be a finite number > 0, got {max_norm!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    max_norm, eps = float(max_norm), float(eps)

    def init(params) -> TorchClipState:
        del params
        return TorchClipState(grad_norm=jnp.zeros((), jnp.float32))

    def update(updates, state, params=None):
        del params
        norm = global_norm(updates)
        coef = jnp.minimum(jnp.ones((), norm.dtype), max_norm / (norm + eps))
        clipped = jax.tree.map(lambda g: (g * coef).astype(jnp.asarray(g).dtype), updates)
        return clipped, TorchClipState(grad_norm=norm.astype(jnp.float32))

    return optax.GradientTransformation(init, update)


def last_grad_norm(opt_state) -> jnp.ndarray:
    """The pre-clip gradient norm recorded by the ``clip_by_global_norm_torch`` inside ``opt_state``."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, TorchClipState))
             if isinstance(s, TorchClipState)]
    if len(found) != 1:
        raise ValueError(f"opt_state holds {len(found)} TorchClipState entries, expected exactly 1 "
                         "(was the optimizer built with max_grad_norm=None?)")
    return found[0].grad_norm


def _zero_frozen_grads(frozen: Callable[[str], bool]) -> optax.GradientTransformation:
    """Gradients of frozen parameters → 0 (so they do not count in the clipping norm, as in torch
    where frozen tensors have no .grad)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        out = jax.tree_util.tree_map_with_path(
            lambda p, g: jnp.zeros_like(g) if frozen(param_path(p)) else g, updates)
        return out, state

    return optax.GradientTransformation(init, update)


# --------------------------------------------------------------------------- AdamW
class AdamWTorchState(NamedTuple):
    """``count``: updates applied so far (int32); ``mu``/``nu``: first/second moments (like params)."""

    count: jnp.ndarray
    mu: Any
    nu: Any


def _check_unit(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_nonneg(value: Any, name: str, strict: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
    if bad or value < 0 or (strict and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}")
    return float(value)


def _as_schedule(learning_rate: float | Schedule) -> Schedule:
    if callable(learning_rate):
        return learning_rate
    lr = _check_nonneg(learning_rate, "learning_rate")
    return lambda count: lr


def _bias_correction(log_beta: float, count_f: jnp.ndarray) -> jnp.ndarray:
    """1 − β^t as −expm1(t·ln β) (accurate in float32 for β close to 1)."""
    if log_beta == -math.inf:  # β = 0
        return jnp.ones_like(count_f)
    return -jnp.expm1(count_f * jnp.float32(log_beta))


def adamw_torch(learning_rate: float | Schedule, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, freeze: FreezeSpec = None,
                lr_multipliers: Mapping[str, float] | None = None) -> optax.GradientTransformation:
    """torch.optim.AdamW (amsgrad off) as an optax transform; needs ``params`` in ``update``.

    ``learning_rate``: a number or a schedule ``count -> lr`` called with the int32 count of updates
    already applied. ``freeze``: predicate on the dotted path, or path prefixes; frozen parameters get
    exactly zero updates and keep their moments. ``lr_multipliers``: path prefix → factor on the
    learning rate (and so on the weight decay step, as a torch parameter group with lr·factor);
    the longest matching prefix wins; a prefix matching no parameter is a ValueError at init.
    """
    schedule = _as_schedule(learning_rate)
    b1 = _check_unit(b1, "b1")
    b2 = _check_unit(b2, "b2")
    eps = _check_nonneg(eps, "eps")
    weight_decay = _check_nonneg(weight_decay, "weight_decay")
    frozen = _frozen_predicate(freeze)
    multipliers = _check_multipliers(lr_multipliers)
    log_b1 = math.log(b1) if b1 > 0 else -math.inf
    log_b2 = math.log(b2) if b2 > 0 else -math.inf

    def init(params) -> AdamWTorchState:
        _leaf_plan(param_paths(params), frozen, multipliers)  # validates the prefixes early
        zeros = jax.tree.map(lambda p: jnp.zeros_like(p), params)
        return AdamWTorchState(count=jnp.zeros((), jnp.int32), mu=zeros,
                               nu=jax.tree.map(lambda p: jnp.zeros_like(p), params))

    def update(updates, state: AdamWTorchState, params=None):
        if params is None:
            raise ValueError("adamw_torch needs the current params: call optimizer.update(grads, state, params)")
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        paths = [param_path(p) for p, _ in flat]
        plan = _leaf_plan(paths, frozen, multipliers)
        grads = [g for _, g in flat]
        mus = treedef.flatten_up_to(state.mu)
        nus = treedef.flatten_up_to(state.nu)
        thetas = treedef.flatten_up_to(params)
        lr = schedule(state.count)
        count = state.count + jnp.where(state.count < jnp.iinfo(jnp.int32).max, 1, 0).astype(jnp.int32)
        count_f = count.astype(jnp.float32)
        bc1 = _bias_correction(log_b1, count_f)
        sqrt_bc2 = jnp.sqrt(_bias_correction(log_b2, count_f))
        new_u, new_mu, new_nu = [], [], []
        for g, m, v, theta, factor in zip(grads, mus, nus, thetas, plan):
            if factor is None:
                new_u.append(jnp.zeros_like(g))
                new_mu.append(m)
                new_nu.append(v)
                continue
            dtype = jnp.asarray(theta).dtype
            g = jnp.asarray(g).astype(m.dtype)
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            lr_leaf = lr * factor
            denom = jnp.sqrt(v) / sqrt_bc2.astype(v.dtype) + eps
            step = -(lr_leaf / bc1).astype(m.dtype) * (m / denom)
            if weight_decay:
                step = step - (lr_leaf * weight_decay) * jnp.asarray(theta)
            new_u.append(step.astype(dtype))
            new_mu.append(m)
            new_nu.append(v)
        unflat = lambda leaves: jax.tree_util.tree_unflatten(treedef, leaves)  # noqa: E731
        return unflat(new_u), AdamWTorchState(count=count, mu=unflat(new_mu), nu=unflat(new_nu))

    return optax.GradientTransformation(init, update)


def make_optimizer(learning_rate: float | Schedule, *, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, max_grad_norm: float | None = 1.0,
                   freeze: FreezeSpec = None,
                   lr_multipliers: Mapping[str, float] | None = None) -> optax.GradientTransformation:
    """[zero frozen gradients] → torch clipping (``max_grad_norm``; None = no clipping) → ``adamw_torch``.

    Use as ``updates, state = opt.update(grads, state, params); params = optax.apply_updates(params, updates)``.
    The state is a tuple: (EmptyState if frozen params,) (TorchClipState if clipping,) AdamWTorchState.
    """
    adam = adamw_torch(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, freeze=freeze,
                       lr_multipliers=lr_multipliers)
    parts = []
    frozen = _frozen_predicate(freeze)
    if frozen is not None:
        parts.append(_zero_frozen_grads(frozen))
    if max_grad_norm is not None:
        parts.append(clip_by_global_norm_torch(max_grad_norm, 1e-6))
    parts.append(adam)
    return optax.chain(*parts)
