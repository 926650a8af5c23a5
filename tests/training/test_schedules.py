"""Schedules (jsplade.training.schedules) against every recorded lr / λ_d / λ_q of the reference train logs.

Tolerances: a Python-int step must give the recorded Python float exactly (==, same float64 operations);
the float32 jnp path (traced step under jit) must be within 1 ulp of float32(recorded value) on the
fixture runs, and within 2 ulp of float32(Python value) on a wider grid of schedules (the documented
general bound: two or three float32 roundings).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import SE_FIXTURES

from jsplade.training.schedules import (linear_warmup_decay, regularizer_warmup_steps, regularizer_weight,
                               warmup_steps_from)

LOGS = ("train_seed_recipe", "train_batch4")


def load_log(name):
    return json.loads((SE_FIXTURES / "expected" / name / "train_log.json").read_text())


def ulps(got_f32, expected_f32):
    a = np.asarray(got_f32, np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(expected_f32, np.float32).view(np.int32).astype(np.int64)
    return np.abs(a - b)


@pytest.mark.parametrize("name", LOGS)
def test_schedule_constants_match_log(name):
    log = load_log(name)
    total = log["total_steps"]
    assert len(log["steps"]) == total
    assert warmup_steps_from(total, log["settings"]["warmup_ratio"]) == log["lr_warmup_steps"]
    assert regularizer_warmup_steps(total) == log["regularizer_warmup_steps"]


@pytest.mark.parametrize("name", LOGS)
def test_python_values_equal_recorded_exactly(name):
    log = load_log(name)
    st = log["settings"]
    total = log["total_steps"]
    warm = warmup_steps_from(total, st["warmup_ratio"])
    for rec in log["steps"]:
        s = rec["step"]
        assert linear_warmup_decay(s, total, st["learning_rate"], warm) == rec["lr"], s
        assert regularizer_weight(s, total, st["document_regularizer_weight_max"]) == rec["lambda_d"], s
        assert regularizer_weight(s, total, st["query_regularizer_weight_max"]) == rec["lambda_q"], s
    first = log["steps"][0]
    assert first["lr"] == 0.0 and first["lambda_d"] == 0.0 and first["lambda_q"] == 0.0


@pytest.mark.parametrize("name", LOGS)
def test_traced_float32_values_within_one_ulp(name):
    log = load_log(name)
    st = log["settings"]
    total = log["total_steps"]
    warm = warmup_steps_from(total, st["warmup_ratio"])
    steps = jnp.arange(total, dtype=jnp.int32)

    @jax.jit
    def all_three(s):
        return (linear_warmup_decay(s, total, st["learning_rate"], warm),
                regularizer_weight(s, total, st["document_regularizer_weight_max"]),
                regularizer_weight(s, total, st["query_regularizer_weight_max"]))

    got = all_three(steps)
    for values, key in zip(got, ("lr", "lambda_d", "lambda_q")):
        assert values.dtype == jnp.float32
        expected = np.array([rec[key] for rec in log["steps"]], np.float32)
        assert ulps(values, expected).max() <= 1, key
    # A scalar traced step as the optimizer passes it.
    one = jax.jit(lambda s: linear_warmup_decay(s, total, st["learning_rate"], warm))(jnp.int32(3))
    assert ulps(one, np.float32(log["steps"][3]["lr"])) <= 1


@pytest.mark.parametrize("total", [7, 12, 80, 333, 1000, 5000])
@pytest.mark.parametrize("peak", [5e-5, 2e-5, 1e-3, 3e-4])
def test_traced_within_two_ulp_in_general(total, peak):
    warm = warmup_steps_from(total, 0.1)
    s = np.arange(total + 3)
    for fn in (lambda x: linear_warmup_decay(x, total, peak, warm),
               lambda x: regularizer_weight(x, total, peak, "quadratic"),
               lambda x: regularizer_weight(x, total, peak, "linear", 0.25)):
        got = np.asarray(fn(jnp.asarray(s)))
        ref = np.array([fn(int(i)) for i in s], np.float32)
        assert ulps(got, ref).max() <= 2


def test_linear_schedule_closed_form():
    total, warm, peak = 10, 3, 1e-3
    lrs = [linear_warmup_decay(s, total, peak, warm) for s in range(total + 2)]
    for s, lr in enumerate(lrs):
        expected = peak * s / warm if s < warm else peak * max(0, total - s) / (total - warm)
        assert lr == pytest.approx(expected, rel=1e-15, abs=0)
    assert lrs[0] == 0.0 and lrs[warm] == peak and lrs[total] == 0.0 and lrs[total + 1] == 0.0
    # No warm-up: the first update uses the full rate.
    assert linear_warmup_decay(0, total, peak, 0) == peak
    # Warm-up longer than the run: only ramps (transformers allows it).
    assert linear_warmup_decay(5, 4, peak, 8) == peak * 5 / 8


def test_regularizer_ramp_closed_form():
    total = 80
    w = regularizer_warmup_steps(total)
    assert w == 26
    for s in range(total):
        quad = regularizer_weight(s, total, 3e-5)
        lin = regularizer_weight(s, total, 3e-5, "linear")
        if s < w:
            assert quad == pytest.approx(3e-5 * (s / w) ** 2, rel=1e-15, abs=0)
            assert lin == pytest.approx(3e-5 * s / w, rel=1e-15, abs=0)
        else:
            assert quad == lin == 3e-5
    assert regularizer_warmup_steps(2) == 1  # max(1, floor(2/3))
    assert regularizer_weight(0, 2, 1.0) == 0.0 and regularizer_weight(1, 2, 1.0) == 1.0


def test_warmup_steps_from_rules():
    assert warmup_steps_from(80, 0.1) == 8
    assert warmup_steps_from(12, 0.1) == 2        # ceil(1.2)
    assert warmup_steps_from(80, warmup_steps=5) == 5
    assert warmup_steps_from(80, 0.1, 8) == 8      # both given and consistent
    assert warmup_steps_from(80) == 0              # neither: no warm-up
    assert warmup_steps_from(80, 0.0) == 0
    assert warmup_steps_from(80, 1.0) == 80
    with pytest.raises(ValueError, match="warmup_steps = 5"):
        warmup_steps_from(80, 0.1, 5)
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_steps_from(80, 1.5)
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_steps_from(80, -0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_steps_from(80, warmup_steps=-1)
    with pytest.raises(TypeError, match="warmup_steps"):
        warmup_steps_from(80, warmup_steps=2.5)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: linear_warmup_decay(-1, 10, 1e-3, 2), ValueError, "step"),
    (lambda: linear_warmup_decay(True, 10, 1e-3, 2), TypeError, "step"),
    (lambda: linear_warmup_decay(0, 0, 1e-3, 2), ValueError, "total_steps"),
    (lambda: linear_warmup_decay(0, 10, float("nan"), 2), ValueError, "peak_lr"),
    (lambda: linear_warmup_decay(0, 10, 1e-3, -2), ValueError, "warmup_steps"),
    (lambda: regularizer_weight(0, 10, 1.0, "cubic"), ValueError, "kind"),
    (lambda: regularizer_weight(0, 10, -1.0), ValueError, "max_weight"),
    (lambda: regularizer_weight(0, 10, 1.0, warmup_ratio=2.0), ValueError, "warmup_ratio"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
