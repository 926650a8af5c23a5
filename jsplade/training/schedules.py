"""Learning-rate and regularizer-weight schedules (sparse_encoder_format.md §5.4, §5.5).

Pure functions of the 0-based optimizer step s (the number of updates already applied):

* ``linear_warmup_decay``: transformers' linear schedule with warm-up, lr 0 at s = 0, 0 again at s = T.
* ``warmup_steps_from``: the warm-up length from a ratio (ceil, the transformers 4.x rule) or a count.
* ``regularizer_weight``: the SpladeRegularizerWeightSchedulerCallback ramp, λ 0 at s = 0.

A Python integer step gives a Python float computed with the same float64 operations, in the same
order, as the reference (so it equals the recorded values exactly). Any other step (a jnp/NumPy array,
a tracer under jit) gives a float32 array computed with two or three float32 roundings: within 1 ulp of
float32(reference) for the fixture schedules and within 2 ulp in general (tests/training/test_schedules.py); the
0.5-ulp exactness of a lookup table is not worth a T-sized constant in the compiled step. The schedule
constants (T, W, peak values) are static Python numbers, validated when the function is called.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax.numpy as jnp

__all__ = ["linear_warmup_decay", "warmup_steps_from", "regularizer_weight", "regularizer_warmup_steps",
           "REGULARIZER_KINDS"]

REGULARIZER_KINDS = ("quadratic", "linear")


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int (bools refused), at least ``minimum``; errors name the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _python_step(step: Any) -> int | None:
    """``step`` as a Python int when it is a host integer; None for arrays/tracers."""
    if isinstance(step, bool):
        raise TypeError("step must be an integer, got bool")
    if isinstance(step, numbers.Integral):
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return int(step)
    return None


def linear_warmup_decay(step, total_steps: int, peak_lr: float, warmup_steps: int):
    """The learning rate of update ``step``: peak·s/W for s < W, else peak·max(0, (T − s)/(T − W)).

    W is replaced by max(1, W) and T − W by max(1, T − W) in the divisions (transformers'
    ``get_linear_schedule_with_warmup``). Returns a Python float for an int step, else float32.
    """
    total = check_int(total_steps, "total_steps", 1)
    warm = check_int(warmup_steps, "warmup_steps", 0)
    peak = _check_number(peak_lr, "peak_lr")
    s = _python_step(step)
    if s is not None:  # LambdaLR: base_lr * lambda(step), the lambda in float64
        if s < warm:
            return peak * (float(s) / float(max(1, warm)))
        return peak * max(0.0, float(total - s) / float(max(1, total - warm)))
    s_f = jnp.asarray(step).astype(jnp.float32)
    up = s_f / jnp.float32(max(1, warm))
    down = jnp.maximum(jnp.float32(0.0), (jnp.float32(total) - s_f) / jnp.float32(max(1, total - warm)))
    return jnp.float32(peak) * jnp.where(s_f < warm, up, down)


def warmup_steps_from(total_steps: int, warmup_ratio: float | None = None, warmup_steps: int | None = None) -> int:
    """Warm-up length W_lr for T = ``total_steps`` updates.

    * only ``warmup_ratio`` r ∈ [0, 1]: ceil(T · r) (transformers 4.x ``warmup_ratio``, e.g. 8 for T = 80, r = 0.1);
    * only ``warmup_steps``: that count (any integer >= 0; transformers allows W > T);
    * both: allowed only when they agree (ceil(T·r) == warmup_steps), else ValueError;
    * neither: 0 (transformers' default, no warm-up).
    """
    total = check_int(total_steps, "total_steps", 0)
    from_ratio = None
    if warmup_ratio is not None:
        ratio = _check_number(warmup_ratio, "warmup_ratio")
        if ratio > 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio}")
        from_ratio = int(math.ceil(total * ratio))
    if warmup_steps is not None:
        count = check_int(warmup_steps, "warmup_steps", 0)
        if from_ratio is not None and from_ratio != count:
            raise ValueError(f"warmup_ratio {warmup_ratio} gives ceil({total} * {warmup_ratio}) = {from_ratio} "
                             f"warm-up steps, but warmup_steps = {count}; give only one of them")
        return count
    return 0 if from_ratio is None else from_ratio


def regularizer_warmup_steps(total_steps: int, warmup_ratio: float = 1 / 3) -> int:
    """W = max(1, floor(T · warmup_ratio)) of the regularizer ramp (26 for T = 80, 4 for T = 12)."""
    total = check_int(total_steps, "total_steps", 1)
    ratio = _check_number(warmup_ratio, "warmup_ratio")
    if ratio > 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio}")
    return max(1, int(total * ratio))  # int() of a non-negative float is floor, as the reference callback


def regularizer_weight(step, total_steps: int, max_weight: float, kind: str = "quadratic",
                       warmup_ratio: float = 1 / 3):
    """The regularizer weight λ in force at update ``step``.

    W = max(1, floor(T · warmup_ratio)); λ = λ_max·(s/W)² ("quadratic") or λ_max·s/W ("linear") for
    s < W, else λ_max. Returns a Python float for an int step, else float32.
    """
    total = check_int(total_steps, "total_steps", 1)
    lam_max = _check_number(max_weight, "max_weight")
    if kind not in REGULARIZER_KINDS:
        raise ValueError(f"kind must be one of {REGULARIZER_KINDS}, got {kind!r}")
    warm = regularizer_warmup_steps(total, warmup_ratio)
    s = _python_step(step)
    if s is not None:
        if s >= warm:
            return lam_max
        frac = s / warm
        return lam_max * (frac ** 2 if kind == "quadratic" else frac)
    s_f = jnp.asarray(step).astype(jnp.float32)
    # s² and W² are exact in float32 while W < 4096: one rounded division instead of squaring a rounded s/W.
    if kind == "quadratic":
        frac = (s_f * s_f) / jnp.float32(warm * warm)
    else:
        frac = s_f / jnp.float32(warm)
    return jnp.where(s_f < warm, jnp.float32(lam_max) * frac, jnp.float32(lam_max))
