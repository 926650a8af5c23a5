"""Shared by the sharding tests and the multi-process worker: a tiny SPLADE model, a fixed batch and
a few sharded train steps (fixture tokenizer-free: random token ids)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsplade.training import sharding
from jsplade.backbones.gte import GTE
from jsplade.backbones.gte_config import GteConfig
from jsplade.checkpoints.hf_folder import mlm_from_params
from jsplade.training.optim import make_optimizer
from jsplade.backbones.params import flat_state_dict
from jsplade.backbones.recipe import recipe_state_dict
from jsplade.splade.model import SpladeModel
from jsplade.splade.static_embedding import StaticQueryEmbedding
from jsplade.training.trainer import StepSettings, make_train_step

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "sparse_encoder" / "model" / "config.json"
SETTINGS = StepSettings(total_steps=6, learning_rate=5e-5, warmup_steps=1, lambda_d=3e-3, lambda_q=5e-3,
                        regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3, dropout=False)


def build_model(remat: bool = False, shape: str = "inference_free") -> SpladeModel:
    """The inference-free test model, or (``shape="asymmetric"``) one with a second GTE as its query MLM."""
    cfg = GteConfig.from_json_file(CONFIG).replace(hidden_dropout_prob=0.0)
    mlm = mlm_from_params(cfg, GTE.hf_to_params(recipe_state_dict(cfg, 7), cfg)).with_compute(remat=remat)
    if shape == "asymmetric":
        query_mlm = mlm_from_params(cfg, GTE.hf_to_params(recipe_state_dict(cfg, 8), cfg)).with_compute(remat=remat)
        return SpladeModel(mlm, None, query_mlm=query_mlm, query_activation="relu")
    weights = np.random.RandomState(0).uniform(0.5, 8.0, cfg.vocab_size).astype(np.float32)
    return SpladeModel(mlm, StaticQueryEmbedding(weights))


# The sharding table of the test model (every SpladeModel over GTE has this one).
AXES = build_model().logical_axes()


def random_batch(seed: int, rows: int, query_len: int, doc_len: int, query_keep: int, doc_every: int,
                 doc_keep: int) -> dict[str, np.ndarray]:
    """One step's (1 × ...) batch of random token ids: queries padded after ``query_keep`` tokens, every
    ``doc_every``-th document row padded after ``doc_keep`` tokens, two document columns."""
    rng = np.random.default_rng(seed)
    batch = {"query_ids": rng.integers(1000, 30000, (1, rows, query_len)).astype(np.int32),
             "query_mask": np.ones((1, rows, query_len), np.int32),
             "doc_ids": rng.integers(1000, 30000, (1, 2, rows, doc_len)).astype(np.int32),
             "doc_mask": np.ones((1, 2, rows, doc_len), np.int32)}
    batch["query_mask"][0, :, query_keep:] = 0
    batch["doc_mask"][0, :, ::doc_every, doc_keep:] = 0
    return batch


def make_batch(step: int, rows: int = 8) -> dict[str, np.ndarray]:
    return random_batch(100 + step, rows, 8, 48, query_keep=6, doc_every=2, doc_keep=40)


def initial_state(optimizer, remat: bool = False, shape: str = "inference_free"):
    graphdef, params = nnx.split(build_model(remat, shape), nnx.Param)
    state = {"params": params, "opt": optimizer.init(params), "step": jnp.asarray(0, jnp.int32),
             "rng": jax.random.key_data(jax.random.key(0))}
    return graphdef, state


def runner(mesh_spec: str | None, packed: bool = False, remat: bool = False, shape: str = "inference_free"):
    """(state, step_fn, place, mesh) for one device (``None``) or a mesh; ``packed``: batches of packed rows;
    ``remat``: per-layer rematerialisation (the scan over stacked layer weights); ``shape``: see build_model."""
    optimizer = make_optimizer(lambda s: SETTINGS.learning_rate)
    graphdef, state = initial_state(optimizer, remat, shape)
    step = make_train_step(graphdef, optimizer, SETTINGS)
    if mesh_spec is None:
        return state, jax.jit(step, donate_argnums=0), (lambda b: b), None
    mesh = sharding.make_mesh(mesh_spec)
    axes = AXES if shape == "inference_free" else build_model(shape=shape).logical_axes()
    state, shardings = sharding.shard_state(state, optimizer, mesh, axes)
    return state, sharding.jit_sharded_step(step, mesh, shardings, packed=packed), \
        (lambda b: sharding.global_batch_from_host(b, mesh)), mesh


def run_steps(state, fn, place, start: int, stop: int):
    metrics = []
    for s in range(start, stop):
        state, m = fn(state, place(make_batch(s)))
        metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
    return state, metrics


def host_params(state) -> dict[str, np.ndarray]:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(state["params"], tiled=True)
    else:
        params = jax.device_get(state["params"])
    return {k: np.asarray(v) for k, v in flat_state_dict(params).items()}
