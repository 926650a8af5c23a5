"""make_optimizer (jsplade.training.optim) against torch.optim.AdamW + clip_grad_norm_ + LambdaLR.

Each run: 10 updates of random float32 gradients (some steps clipped, some not) with the linear warm-up
/ decay schedule (T = 10, W = 2, so update 0 uses lr 0). Tolerances: parameters 1e-6 relative to the
tensor's largest entry after every update; the parameter change since the start 1e-5 of its largest
entry plus 2 float32 ulp of the tensor's largest |θ| (torch rounds θ twice per step when weight
decay is on); pre-clip norms 1e-6 relative. Observed: parameters ≤ 2e-7, changes ≤ 5e-5 relative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from helpers.fixtures import max_rel
from flax import nnx

from jsplade.training.optim import (AdamWTorchState, clip_by_global_norm_torch, global_norm, last_grad_norm,
                           make_optimizer, param_paths)
from jsplade.training.schedules import linear_warmup_decay

TOTAL, WARM, PEAK = 10, 2, 2e-2
SHAPES = {"enc": {"kernel": (6, 4), "bias": (4,)}, "head": {"w": (3, 2, 2)}, "query": {"weight": (9,)}}


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {g: {k: rng.normal(size=s).astype(np.float32) for k, s in sub.items()} for g, sub in SHAPES.items()}


def grad_sequence(seed=1, steps=TOTAL, factor=1.0):
    """Gradients with global norms alternating well above and below 1 (clipping on and off)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(steps):
        scale = factor * (3.0 if s % 2 == 0 else 0.05)
        out.append({g: {k: (scale * rng.normal(size=sh)).astype(np.float32) for k, sh in sub.items()}
                    for g, sub in SHAPES.items()})
    return out


def flat(tree):
    return {f"{g}.{k}": v for g, sub in tree.items() for k, v in sub.items()}


def lr_lambda(step):
    return linear_warmup_decay(step, TOTAL, 1.0, WARM)  # the factor LambdaLR multiplies each group's lr by


def torch_run(params0, grads, *, weight_decay=0.0, frozen=(), multipliers=None, max_norm=1.0):
    """Reference trajectory: list (per update) of ({name: array}, pre-clip norm)."""
    tensors = {n: torch.tensor(v.copy(), requires_grad=n not in frozen) for n, v in flat(params0).items()}
    trainable = [n for n in tensors if n not in frozen]
    groups = {}
    for n in trainable:
        factor = 1.0
        for prefix, f in (multipliers or {}).items():
            if n.startswith(prefix):
                factor = f
        groups.setdefault(factor, []).append(tensors[n])
    opt = torch.optim.AdamW([{"params": ps, "lr": PEAK * f} for f, ps in groups.items()], lr=PEAK,
                            betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    history = []
    for g in grads:
        fg = flat(g)
        for n in trainable:
            tensors[n].grad = torch.tensor(fg[n].copy())
        norm = torch.nn.utils.clip_grad_norm_([tensors[n] for n in trainable], max_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        history.append(({n: t.detach().numpy().copy() for n, t in tensors.items()}, float(norm)))
    return history


def jax_run(params0, grads, **opt_kwargs):
    opt = make_optimizer(lambda s: linear_warmup_decay(s, TOTAL, PEAK, WARM), **opt_kwargs)
    params = jax.tree.map(jnp.asarray, params0)
    state = opt.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    history = []
    for g in grads:
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        norm = float(last_grad_norm(state)) if opt_kwargs.get("max_grad_norm", 1.0) is not None else None
        history.append(({n: np.asarray(v) for n, v in flat(params).items()}, norm))
    return history, state


def assert_same_trajectory(ours, ref, params0, frozen=()):
    start = flat(params0)
    for step, ((p_ours, n_ours), (p_ref, n_ref)) in enumerate(zip(ours, ref)):
        if n_ours is not None:
            assert abs(n_ours - n_ref) <= 1e-6 * n_ref, (step, n_ours, n_ref)
        for name in p_ref:
            if name in frozen:
                assert np.array_equal(p_ours[name], start[name]), (step, name)
                continue
            assert max_rel(p_ours[name], p_ref[name]) <= 1e-6, (step, name)
            delta_ref = p_ref[name].astype(np.float64) - start[name]
            if np.any(delta_ref):
                delta_ours = p_ours[name].astype(np.float64) - start[name]
                # 1e-5 of the change, plus 2 ulp of θ: torch rounds θ twice per step with weight decay
                # (θ·(1 − lr·wd), then the Adam step), optax once (θ + u).
                tol = 1e-5 * np.abs(delta_ref).max() + 2 * float(np.spacing(np.abs(p_ref[name]).max()))
                assert np.abs(delta_ours - delta_ref).max() <= tol, (step, name)


def test_clip_adamw_schedule_match_torch():
    params0, grads = init_params(), grad_sequence()
    ref = torch_run(params0, grads)
    ours, state = jax_run(params0, grads)
    assert_same_trajectory(ours, ref, params0)
    # Update 0 ran at lr 0: nothing moved, yet the moments and the count advanced (torch does the same).
    for name, v in flat(params0).items():
        assert np.array_equal(ref[0][0][name], v)
        assert np.array_equal(ours[0][0][name], v)
    adam = state[-1]
    assert isinstance(adam, AdamWTorchState) and int(adam.count) == TOTAL
    # Clipping was active on the large steps and inactive on the small ones.
    norms = [n for _, n in ref]
    assert max(norms[0::2]) > 1.0 and max(norms[1::2]) < 1.0


def test_lr_zero_first_update_still_moves_moments():
    params0, grads = init_params(), grad_sequence(steps=1)
    opt = make_optimizer(lambda s: linear_warmup_decay(s, TOTAL, PEAK, WARM))
    params = jax.tree.map(jnp.asarray, params0)
    state = opt.init(params)
    updates, state = opt.update(jax.tree.map(jnp.asarray, grads[0]), state, params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert int(state[-1].count) == 1
    assert all(np.any(np.asarray(m)) for m in jax.tree.leaves(state[-1].mu))


def test_weight_decay_matches_torch():
    params0, grads = init_params(2), grad_sequence(3)
    ref = torch_run(params0, grads, weight_decay=0.1)
    ours, _ = jax_run(params0, grads, weight_decay=0.1)
    assert_same_trajectory(ours, ref, params0)


def test_tiny_gradients_where_eps_matters_match_torch():
    """Gradients ~1e-9..1e-7: √v̂ is comparable to ε = 1e-8, so ε's place (outside the sqrt) shows."""
    params0, grads = init_params(15), grad_sequence(16, factor=1e-8)
    ref = torch_run(params0, grads)
    ours, _ = jax_run(params0, grads)
    assert_same_trajectory(ours, ref, params0)


def test_no_clipping_matches_torch_with_huge_max_norm():
    params0, grads = init_params(4), grad_sequence(5)
    ref = torch_run(params0, grads, max_norm=1e30)
    ours, _ = jax_run(params0, grads, max_grad_norm=None)
    assert_same_trajectory(ours, ref, params0)


@pytest.mark.parametrize("freeze", [lambda path: path.startswith("query."), ["query"], ("query.",)])
def test_freeze_matches_torch_requires_grad_false(freeze):
    params0, grads = init_params(6), grad_sequence(7)
    ref = torch_run(params0, grads, frozen=("query.weight",))
    ours, state = jax_run(params0, grads, freeze=freeze)
    assert_same_trajectory(ours, ref, params0, frozen=("query.weight",))
    adam = state[-1]
    assert not np.any(np.asarray(adam.mu["query"]["weight"])) and not np.any(np.asarray(adam.nu["query"]["weight"]))
    # The frozen gradient is left out of the clipping norm (torch: no .grad on frozen tensors).
    assert abs(ours[0][1] - ref[0][1]) <= 1e-6 * ref[0][1]
    assert abs(ours[0][1] - float(global_norm(grads[0]))) > 1e-3


def test_per_module_learning_rates_match_torch_param_groups():
    params0, grads = init_params(8), grad_sequence(9)
    mult = {"enc.": 0.25, "query": 4.0}
    ref = torch_run(params0, grads, multipliers={"enc.": 0.25, "query.": 4.0}, weight_decay=0.05)
    ours, _ = jax_run(params0, grads, lr_multipliers=mult, weight_decay=0.05)
    assert_same_trajectory(ours, ref, params0)


def test_longest_prefix_wins_and_zero_factor_freezes_updates():
    params0, grads = init_params(10), grad_sequence(11, steps=4)
    ours, _ = jax_run(params0, grads, lr_multipliers={"enc": 0.0, "enc.bias": 1.0})
    start = flat(params0)
    assert np.array_equal(ours[-1][0]["enc.kernel"], start["enc.kernel"])
    assert not np.array_equal(ours[-1][0]["enc.bias"], start["enc.bias"])


def test_unknown_multiplier_prefix_is_an_error():
    opt = make_optimizer(1e-3, lr_multipliers={"encoder.": 0.5})
    with pytest.raises(ValueError, match="encoder"):
        opt.init(jax.tree.map(jnp.asarray, init_params()))


def test_clip_transform_matches_torch_clip_grad_norm():
    for scale in (10.0, 0.01):
        g = jax.tree.map(lambda x: x * scale, grad_sequence(12, steps=1)[0])
        tensors = [torch.zeros(v.shape, requires_grad=True) for v in flat(g).values()]
        for t, v in zip(tensors, flat(g).values()):
            t.grad = torch.tensor(v.copy())
        norm_ref = float(torch.nn.utils.clip_grad_norm_(tensors, 1.0))
        clip = clip_by_global_norm_torch(1.0)
        out, st = clip.update(jax.tree.map(jnp.asarray, g), clip.init(g))
        assert abs(float(st.grad_norm) - norm_ref) <= 1e-6 * norm_ref
        for t, v in zip(tensors, flat(out).values()):
            assert max_rel(v, t.grad.numpy()) <= 1e-6
    # Below max_norm torch still multiplies by min(1, max/(norm + 1e-6)) = 1: gradients unchanged.
    small = jax.tree.map(lambda x: jnp.asarray(x) * 1e-3, grad_sequence(13, steps=1)[0])
    out, _ = clip_by_global_norm_torch(1.0).update(small, clip_by_global_norm_torch(1.0).init(small))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(small)))


def test_global_norm_matches_numpy():
    g = grad_sequence(14, steps=1)[0]
    ref = np.sqrt(sum(np.sum(np.float64(v) ** 2) for v in flat(g).values()))
    assert abs(float(global_norm(g)) - ref) <= 1e-6 * ref
    assert float(global_norm({})) == 0.0


class _Tiny(nnx.Module):
    def __init__(self):
        self.mlm = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        self.layers = nnx.List([nnx.Linear(2, 2, rngs=nnx.Rngs(1))])
        self.query = nnx.Module()
        self.query.weight = nnx.Param(jnp.ones((5,), jnp.float32))


def test_nnx_state_paths_and_frozen_query_weights():
    graphdef, params = nnx.split(_Tiny(), nnx.Param)
    paths = param_paths(params)
    assert sorted(paths) == ["layers.0.bias", "layers.0.kernel", "mlm.bias", "mlm.kernel", "query.weight"]
    opt = make_optimizer(1e-2, freeze=lambda p: p.startswith("query."), lr_multipliers={"mlm.": 0.5})
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(opt.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    flat_new = dict(zip(param_paths(new), jax.tree.leaves(new)))
    flat_old = dict(zip(paths, jax.tree.leaves(params)))
    assert np.array_equal(flat_new["query.weight"], flat_old["query.weight"])
    # First Adam step with g = 1 everywhere: |Δθ| = lr·factor·(1/(1+1e-8)) per entry.
    assert np.allclose(np.asarray(flat_old["mlm.kernel"] - flat_new["mlm.kernel"]), 0.5e-2, rtol=1e-6)
    assert np.allclose(np.asarray(flat_old["layers.0.kernel"] - flat_new["layers.0.kernel"]), 1e-2, rtol=1e-6)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"b1": 1.0}, ValueError, "b1"),
    ({"b2": -0.1}, ValueError, "b2"),
    ({"eps": -1.0}, ValueError, "eps"),
    ({"weight_decay": float("inf")}, ValueError, "weight_decay"),
    ({"max_grad_norm": 0.0}, ValueError, "max_norm"),
    ({"lr_multipliers": {"enc": -1.0}}, ValueError, "lr_multipliers"),
    ({"lr_multipliers": ["enc"]}, TypeError, "lr_multipliers"),
    ({"freeze": 3}, TypeError, "freeze"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_optimizer(1e-3, **kwargs)


def test_update_without_params_is_a_clear_error():
    opt = make_optimizer(1e-3)
    params = jax.tree.map(jnp.asarray, init_params())
    with pytest.raises(ValueError, match="params"):
        opt.update(params, opt.init(params))
