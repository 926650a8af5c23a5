"""The one trainer: SpladeLoss + AdamW on a SPLADE model (inference-free, symmetric or asymmetric), exact to
sentence-transformers.

The step is a pure function ``train_step(state, batch) -> (state, metrics)`` (``make_train_step``),
jit-compiled with the state donated. ``state`` = {"params": nnx.State, "opt": optax state,
"step": int32, "rng": uint32 key data}; the dropout key of step s is fold_in(rng, s), so a run is a
function of (initial state, batch plan) only — which is what makes kill-and-resume exact.

Batch arrays (host side, padded to a length ladder so few programs compile):
``query_ids/query_mask`` [A, B, Lq] and ``doc_ids/doc_mask`` [A, C, B, Ld] for A gradient-accumulation
micro-batches, B rows, C document columns (positive + hard negatives). Inference-free models get query
tokens without special tokens (a presence matrix times the static weights); symmetric and asymmetric models
get them as the MLM reads them (special tokens included) and encode them through the document MLM
(symmetric) or their own query MLM (asymmetric), with the query regularizer on those vectors. A loss that
reads labels (distillation, similarity regression) gets ``labels`` [A, B] or [A, B, K] float32 as well; the
base loss is chosen by name (``TrainConfig.loss``, ``jsplade.training.losses.BASE_LOSSES``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jsplade.backbones.params import flat_state_dict
from jsplade.checkpoints.orbax_dir import CheckpointSteps, copy_template, to_numpy_flat, write_meta
from jsplade.splade.batching import padded_length, pow2_at_least
from jsplade.splade.encoder import SparseEncoder
from jsplade.splade.packing import pack_documents
from jsplade.splade.static_embedding import query_presence
from jsplade.training import data as training_data
from jsplade.training import multihost, sharding, streaming
from jsplade.training.config import TrainConfig
from jsplade.training.losses import BASE_LOSSES, splade_loss
from jsplade.training.metrics import MetricsLog
from jsplade.training.optim import global_norm, last_grad_norm, make_optimizer
from jsplade.training.schedules import linear_warmup_decay, regularizer_weight, warmup_steps_from

logger = logging.getLogger("jsplade")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class StepSettings:
    """Static (hashable) settings of the compiled step."""

    total_steps: int
    learning_rate: float
    warmup_steps: int
    lambda_d: float
    lambda_q: float | None
    regularizer_schedule: str
    regularizer_warmup_ratio: float
    scale: float = 1.0
    document_threshold: int | None = None
    query_threshold: int | None = None
    document_idf_weighting: bool = False
    dropout: bool = True
    loss: str = "SparseMultipleNegativesRankingLoss"  # the base loss (jsplade.training.losses.BASE_LOSSES)
    loss_params: tuple[tuple[str, Any], ...] = ()      # its parameters, as sorted (name, value) pairs
    use_document_regularizer_only: bool = False
    cached_mini_batch_size: int | None = None  # GradCache mini-batch rows; None: one pass over the batch


def frozen_params(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Loss parameters as a hashable, sorted tuple (lists become tuples), for the static step settings."""
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v

    return tuple(sorted((k, freeze(v)) for k, v in params.items()))


def lr_schedule(settings: StepSettings) -> Callable[[Any], Any]:
    return lambda step: linear_warmup_decay(step, settings.total_steps, settings.learning_rate, settings.warmup_steps)


def lambdas(settings: StepSettings, step) -> tuple[Any, Any]:
    lam_d = regularizer_weight(step, settings.total_steps, settings.lambda_d, settings.regularizer_schedule,
                               settings.regularizer_warmup_ratio)
    lam_q = None if settings.lambda_q is None else regularizer_weight(
        step, settings.total_steps, settings.lambda_q, settings.regularizer_schedule, settings.regularizer_warmup_ratio)
    return lam_d, lam_q


def batch_statistics(q_BxV, d_NxV) -> dict[str, jnp.ndarray]:
    """Active dims (mean non-zeros per row) of queries and documents and the batch FLOPS
    Σ_j p_q(j)·p_d(j) (p = fraction of rows with a non-zero in dim j)."""
    q_nz = (q_BxV != 0).astype(jnp.float32)
    d_nz = (d_NxV != 0).astype(jnp.float32)
    return {
        "query_active_dims": jnp.mean(jnp.sum(q_nz, axis=1)),
        "document_active_dims": jnp.mean(jnp.sum(d_nz, axis=1)),
        "flops": jnp.sum(jnp.mean(q_nz, axis=0) * jnp.mean(d_nz, axis=0)),
    }


_QUERY_DROPOUT_STREAM = 1 << 20  # folded into the step key for the query pass of an MLM-query model


def make_embed_fn(graphdef, settings: StepSettings):
    """embed(params, micro, key) -> (q_BxV, d_CxBxV): the query and document-column vectors of a micro-batch."""

    def embed(params, micro, key):
        model = nnx.merge(graphdef, params)
        vocab = model.vocab_size
        batch = micro["query_ids"].shape[0]
        dropout_key = key if settings.dropout else None
        if model.inference_free:
            q_BxV = model.encode_queries(query_presence(micro["query_ids"], micro["query_mask"], vocab))
        else:  # the queries run through an MLM (their own dropout masks)
            q_key = None if dropout_key is None else jax.random.fold_in(dropout_key, _QUERY_DROPOUT_STREAM)
            q_BxV = model.encode_query_tokens(micro["query_ids"], micro["query_mask"], dropout_key=q_key)
        if "pack_ids" in micro:  # several documents per row (jsplade.splade.packing)
            n_docs = micro["pack_slot"].shape[0]
            n_cols = n_docs // batch
            vecs = model.encode_packed(micro["pack_ids"], micro["pack_mask"], micro["pack_pos"], micro["pack_seg"],
                                       micro["pack_group"], micro["pack_groups"].shape[0], dropout_key=dropout_key)
            d_NxV = vecs[micro["pack_slot"][:, 0], micro["pack_slot"][:, 1]]
        else:
            n_cols, batch, length = micro["doc_ids"].shape
            d_NxV = model.encode_documents(micro["doc_ids"].reshape(n_cols * batch, length),
                                           micro["doc_mask"].reshape(n_cols * batch, length), dropout_key=dropout_key)
        return q_BxV, d_NxV.reshape(n_cols, batch, vocab)

    return embed


def make_embedding_loss_fn(graphdef, settings: StepSettings):
    """loss(params, q_BxV, d_CxBxV, labels, lam_d, lam_q) -> (total, (terms, stats)): SpladeLoss of given
    vectors (``params`` only supply the IDF of ``document_idf_weighting``, without gradient)."""

    def loss(params, q_BxV, d_CxBxV, labels, lam_d, lam_q):
        n_cols, batch, vocab = d_CxBxV.shape
        idf = None
        if settings.document_idf_weighting:
            idf = jax.lax.stop_gradient(nnx.merge(graphdef, params).query.weight[...])
        terms = splade_loss(q_BxV, [d_CxBxV[c] for c in range(n_cols)], lam_d, lam_q, scale=settings.scale,
                            doc_threshold=settings.document_threshold, query_threshold=settings.query_threshold,
                            doc_idf_V=idf, base=settings.loss, base_params=dict(settings.loss_params), labels=labels,
                            use_document_regularizer_only=settings.use_document_regularizer_only)
        return terms["total"], (terms, batch_statistics(q_BxV, d_CxBxV.reshape(n_cols * batch, vocab)))

    return loss


def make_loss_fn(graphdef, settings: StepSettings):
    """loss(params, micro_batch, key, lam_d, lam_q) -> (total, (terms, stats))."""
    embed = make_embed_fn(graphdef, settings)
    loss_of = make_embedding_loss_fn(graphdef, settings)

    def loss_fn(params, micro, key, lam_d, lam_q):
        q_BxV, d_CxBxV = embed(params, micro, key)
        return loss_of(params, q_BxV, d_CxBxV, micro.get("labels"), lam_d, lam_q)

    return loss_fn


def cache_chunk(batch: int, mini_batch: int) -> int:
    """Rows per GradCache mini-batch: the largest divisor of ``batch`` not above ``mini_batch`` (the chunking
    does not change the result, only how much is live at once)."""
    return next(c for c in range(min(batch, mini_batch), 0, -1) if batch % c == 0)


def make_cached_grad_fn(graphdef, settings: StepSettings, mini_batch: int):
    """GradCache (Gao et al. 2021; sentence-transformers' CachedSpladeLoss): value_and_grad of ``make_loss_fn``
    over a batch of any size with the activations of only one mini-batch live.

    1. every mini-batch's vectors, forward only (nothing kept for a backward pass);
    2. the loss and its gradient with respect to all the vectors (global in-batch negatives, regularizers);
    3. each mini-batch again, forward and backward, its slice of that gradient as the cotangent, summed into
       the parameter gradient.
    Mini-batch i holds rows i, i + n, i + 2n, … (n mini-batches): on a mesh every mini-batch spans every
    device's rows. Each mini-batch's dropout key is fold_in(key, i) in both passes, so step 3 replays step 1.
    Packed documents are not supported here (the trainer refuses the combination).
    """
    embed = make_embed_fn(graphdef, settings)
    loss_of = make_embedding_loss_fn(graphdef, settings)

    def split(micro, chunk):
        """[.., B, ..] arrays → [n, .., chunk, ..] (row a·n + i → mini-batch i, position a)."""
        out = {}
        for k, v in micro.items():
            if k == "labels":
                continue
            axis = 1 if k in ("doc_ids", "doc_mask") else 0
            rows = v.shape[axis]
            v = v.reshape(*v.shape[:axis], chunk, rows // chunk, *v.shape[axis + 1:])
            out[k] = jnp.moveaxis(v, axis + 1, 0)
        return out

    def join(x_nx_chunk, axis):
        """inverse of ``split`` for one array whose row axis is ``axis`` (after the leading n)."""
        x = jnp.moveaxis(x_nx_chunk, 0, axis + 1)
        return x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2:])

    def grad_fn(params, micro, key, lam_d, lam_q):
        batch = micro["query_ids"].shape[0]
        chunk = cache_chunk(batch, mini_batch)
        n = batch // chunk
        parts = split(micro, chunk)
        idx = jnp.arange(n)

        def embed_chunk(p, part, i):
            return embed(p, part, None if key is None else jax.random.fold_in(key, i))

        q_n, d_n = jax.lax.map(lambda xs: embed_chunk(params, xs[0], xs[1]), (parts, idx))
        q_BxV, d_CxBxV = join(q_n, 0), join(d_n, 1)
        (total, aux), (g_q, g_d) = jax.value_and_grad(loss_of, argnums=(1, 2), has_aux=True)(
            params, q_BxV, d_CxBxV, micro.get("labels"), lam_d, lam_q)
        g_q_n = jnp.moveaxis(g_q.reshape(chunk, n, -1), 1, 0)
        g_d_n = jnp.moveaxis(g_d.reshape(g_d.shape[0], chunk, n, -1), 2, 0)

        def backward(acc, xs):
            part, i, gq, gd = xs
            _, vjp = jax.vjp(lambda p: embed_chunk(p, part, i), params)
            (g,) = vjp((gq, gd))
            return jax.tree.map(jnp.add, acc, g), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        grads, _ = jax.lax.scan(backward, zeros, (parts, idx, g_q_n, g_d_n))
        return (total, aux), grads

    return grad_fn


def make_train_step(graphdef, optimizer: optax.GradientTransformation, settings: StepSettings):
    """The pure step. ``batch`` arrays carry a leading micro-batch axis (gradient accumulation)."""
    if settings.cached_mini_batch_size is None:
        grad_fn = jax.value_and_grad(make_loss_fn(graphdef, settings), has_aux=True)
    else:
        grad_fn = make_cached_grad_fn(graphdef, settings, settings.cached_mini_batch_size)
    schedule = lr_schedule(settings)

    def train_step(state, batch):
        step = state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        lam_d, lam_q = lambdas(settings, step)
        n_micro = batch["query_ids"].shape[0]

        def micro_grads(i):
            micro = {k: v[i] for k, v in batch.items()}
            (_, (terms, stats)), grads = grad_fn(state["params"], micro, jax.random.fold_in(key, i), lam_d, lam_q)
            return grads, terms, stats

        if n_micro == 1:
            grads, terms, stats = micro_grads(0)
        else:
            def body(carry, i):
                g, t, s = micro_grads(i)
                return jax.tree.map(jnp.add, carry, (g, t, s)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(micro_grads, 0))
            (grads, terms, stats), _ = jax.lax.scan(body, zeros, jnp.arange(n_micro))
            grads, terms, stats = jax.tree.map(lambda x: x / n_micro, (grads, terms, stats))

        updates, opt_state = optimizer.update(grads, state["opt"], state["params"])
        try:  # the norm torch's clip_grad_norm_ reports (frozen parameters excluded)
            grad_norm = last_grad_norm(opt_state)
        except ValueError:  # built without clipping
            grad_norm = global_norm(grads)
        params = optax.apply_updates(state["params"], updates)
        metrics = {**{k: v for k, v in terms.items()}, **stats, "grad_norm": grad_norm, "lr": schedule(step),
                   "lambda_d": lam_d, "lambda_q": jnp.float32(0.0) if lam_q is None else lam_q}
        new_state = {"params": params, "opt": opt_state, "step": step + 1, "rng": state["rng"]}
        return new_state, metrics

    return train_step


# --------------------------------------------------------------------------- host side
def collate(encoder: SparseEncoder, rows: Sequence[Sequence[str]], micro_batches: Sequence[Sequence[int]],
            max_query_length: int | None, max_document_length: int, pack_length: int | None = None,
            row_multiple: int = 1, labels: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """Tokenize the rows of each micro-batch into padded arrays (see module docstring).

    ``labels``: one label per row (a float or a tuple of floats, ``PairDataset.labels``); they become
    ``labels`` [A, B] or [A, B, K] float32.

    With ``pack_length`` the documents of a micro-batch (every column) are packed several to a row of that
    many tokens instead (``pack_*`` arrays: rows padded to a power of two that ``row_multiple`` divides,
    ``pack_slot`` [A, C·B, 2] = (row, group) of each document in column-major order).
    """
    n_cols = len(rows[0]) - 1
    q_ids_all, d_ids_all = [], []
    for mb in micro_batches:
        queries = [rows[i][0] for i in mb]
        if encoder.model.inference_free:
            q_ids_all.append(encoder.query_tokenizer.encode_queries(queries, max_query_length))
        else:  # symmetric / asymmetric: as the query MLM reads them, special tokens included
            q_ids_all.append(encoder.query_tokenizer.encode_documents(
                queries, max_query_length or encoder.query_max_seq_length)[0])
        cols = []
        for c in range(1, n_cols + 1):
            ids, _ = encoder.document_tokenizer.encode_documents([rows[i][c] for i in mb], max_document_length)
            cols.append(ids)
        d_ids_all.append(cols)
    lq = padded_length(max(1, max(len(x) for q in q_ids_all for x in q)), 1 << 30)
    n_micro, batch = len(micro_batches), len(micro_batches[0])
    out = {
        "query_ids": np.zeros((n_micro, batch, lq), np.int32),
        "query_mask": np.zeros((n_micro, batch, lq), np.int32),
    }
    for a in range(n_micro):
        for b, ids in enumerate(q_ids_all[a]):
            out["query_ids"][a, b, :len(ids)] = ids
            out["query_mask"][a, b, :len(ids)] = 1
    if labels is not None:
        out["labels"] = np.asarray([[labels[i] for i in mb] for mb in micro_batches], np.float32)
    if pack_length is not None:
        out.update(pack_micro_batches(d_ids_all, min(pack_length, max_document_length), row_multiple))
        return out
    ld = padded_length(max(len(x) for cols in d_ids_all for col in cols for x in col), max_document_length)
    out["doc_ids"] = np.zeros((n_micro, n_cols, batch, ld), np.int32)
    out["doc_mask"] = np.zeros((n_micro, n_cols, batch, ld), np.int32)
    for a in range(n_micro):
        for c in range(n_cols):
            for b, ids in enumerate(d_ids_all[a][c]):
                out["doc_ids"][a, c, b, :len(ids)] = ids
                out["doc_mask"][a, c, b, :len(ids)] = 1
    return out


def pad_batch(batch: dict[str, np.ndarray], query_length: int, document_length: int) -> dict[str, np.ndarray]:
    """A padded ``collate`` batch with its query and document axes zero-padded to the given lengths (the
    lengths all processes of a streamed multi-process step agree on: the largest of theirs). The result
    equals ``collate`` of the same rows with those lengths (its padding is zeros too)."""
    out = dict(batch)
    for keys, length in ((("query_ids", "query_mask"), query_length), (("doc_ids", "doc_mask"), document_length)):
        for k in keys:
            have = out[k].shape[-1]
            if length < have:
                raise ValueError(f"pad_batch: {k} is {have} tokens long, longer than {length}")
            if length > have:
                out[k] = np.pad(out[k], [(0, 0)] * (out[k].ndim - 1) + [(0, length - have)])
    return out


def pack_micro_batches(d_ids_all, pack_length: int, row_multiple: int) -> dict[str, np.ndarray]:
    """The ``pack_*`` arrays of ``collate``: ``d_ids_all[a][c][b]`` = token ids of document ``b`` of column
    ``c`` in micro-batch ``a``, packed into rows of ``pack_length`` tokens (see ``collate``)."""
    packed = [pack_documents([ids for col in cols for ids in col], pack_length) for cols in d_ids_all]
    n_rows = max(pow2_at_least(max(p.input_ids.shape[0] for p in packed)), row_multiple)
    n_rows = -(-n_rows // row_multiple) * row_multiple
    n_groups = pow2_at_least(max(p.n_groups for p in packed))
    n_micro = len(packed)
    out = {k: np.zeros((n_micro, n_rows, pack_length), np.int32) for k in ("pack_ids", "pack_mask", "pack_pos",
                                                                             "pack_seg")}
    out["pack_group"] = np.full((n_micro, n_rows, pack_length), -1, np.int32)
    out["pack_slot"] = np.stack([p.doc_slot for p in packed]).astype(np.int32)
    out["pack_groups"] = np.zeros((n_micro, n_groups), np.int32)  # only its shape is used: G (static)
    for a, p in enumerate(packed):
        r = p.input_ids.shape[0]
        out["pack_ids"][a, :r] = p.input_ids
        out["pack_mask"][a, :r] = p.attention_mask
        out["pack_pos"][a, :r] = p.position_ids
        out["pack_seg"][a, :r] = p.segment_ids
        out["pack_group"][a, :r] = p.group_ids
    return out


def tree_to_flat(tree) -> dict[str, Any]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def flat_to_tree(flat: dict[str, Any], like, keep_arrays: bool = False) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    missing = [jax.tree_util.keystr(p) for p, _ in leaves if jax.tree_util.keystr(p) not in flat]
    if missing:
        raise ValueError(f"checkpoint optimizer state is missing entries {missing[:3]}")
    conv = (lambda x: x) if keep_arrays else jnp.asarray
    return jax.tree_util.tree_unflatten(treedef, [conv(flat[jax.tree_util.keystr(p)]) for p, _ in leaves])


def save_state(ckpt: CheckpointSteps, state, step: int, total_steps: int, force: bool = False,
               data_state: dict[str, Any] | None = None) -> None:
    """Write a train state as checkpoint ``step`` (flat params, flat optimizer state, progress JSON; with
    ``data_state``, the position in streamed training data after this step, in the progress JSON)."""
    if jax.process_count() == 1:
        host = jax.device_get(state)  # a host copy: the next step donates the device buffers
        params = to_numpy_flat(flat_state_dict(host["params"]))
        opt = {k: np.asarray(v) for k, v in tree_to_flat(host["opt"]).items()}
        rng = np.asarray(host["rng"]).tolist()
    else:  # each process writes its own shards (orbax coordinates)
        params = dict(flat_state_dict(state["params"]))
        opt = tree_to_flat(state["opt"])
        rng = np.asarray(jax.device_get(state["rng"])).tolist()
    progress = {"step": int(step), "total_steps": int(total_steps), "rng": rng}
    if data_state is not None:
        progress["data_state"] = data_state
    ckpt.save(step, params, opt_state=opt, progress=progress, force=force)
    if jax.process_count() > 1:
        ckpt.wait()


def restore_state(ckpt: CheckpointSteps, template, total_steps: int, mesh=None, step: int | None = None,
                  with_progress: bool = False):
    """Restore the latest (or ``step``) checkpoint into the structure — and, with ``mesh``, the shardings —
    of ``template`` (a freshly initialised train state). A checkpoint from another mesh shape restores fine.
    Returns (state, step), or (state, step, progress JSON) ``with_progress``."""
    sharded = mesh is not None

    def abstract(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding if sharded else None)

    params_target = {k: abstract(v) for k, v in flat_state_dict(template["params"]).items()}
    opt_target = {k: abstract(v) for k, v in tree_to_flat(template["opt"]).items()}
    restored = ckpt.restore(step, params_target=params_target, opt_target=opt_target)
    progress = restored.get("progress", {})
    if progress.get("total_steps", total_steps) != total_steps:
        raise ValueError(f"{ckpt.dir}: the checkpoint belongs to a run of {progress.get('total_steps')} steps, "
                         f"this configuration plans {total_steps}; use another output_dir or resume=false")
    params = template["params"]
    flat = restored["params"]
    for path, var in nnx.to_flat_state(params):
        value = flat[".".join(str(p) for p in path)]
        var.set_value(value if sharded else jnp.asarray(value))
    opt = flat_to_tree(restored["opt"], template["opt"], keep_arrays=sharded)
    done = int(restored["step"])
    rng = jnp.asarray(np.asarray(progress.get("rng", np.asarray(jax.device_get(template["rng"]))), np.uint32))
    new = {"params": params, "opt": opt, "step": jnp.asarray(done, jnp.int32), "rng": rng}
    if sharded:
        rep = sharding.replicated(mesh)
        new["step"] = jax.device_put(new["step"], rep)
        new["rng"] = jax.device_put(new["rng"], rep)
    return (new, done, progress) if with_progress else (new, done)


def _group_micro_batches(batches: Sequence[Sequence[int]], per_step: int) -> list[list[list[int]]]:
    steps: list[list[list[int]]] = []
    for start in range(0, len(batches), per_step):
        run: list[list[int]] = []
        for batch in batches[start:start + per_step]:
            if run and len(batch) != len(run[0]):
                steps.append(run)
                run = []
            run.append(list(batch))
        steps.append(run)
    return steps


class _NullLog:
    """Metrics sink of non-primary processes (metrics are written once)."""

    def log(self, step, metrics) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class TrainResult:
    encoder: SparseEncoder
    steps: int
    history: list[dict[str, Any]]
    output_dir: Path
    export_dir: Path | None


class Trainer:
    """Host loop around the compiled step: data plan, logging, checkpoints, resume, export."""

    def __init__(self, config: TrainConfig, encoder: SparseEncoder | None = None, dataset=None,
                 eval_fn: Callable[[SparseEncoder, int], dict[str, float]] | None = None,
                 plan: list[list[list[int]]] | None = None):
        self.config = config
        if encoder is None and not config.base_model:
            raise ValueError("config key 'base_model' is empty: give a SparseEncoder directory, a jsplade "
                             "checkpoint directory or a hub id")
        self.encoder = encoder if encoder is not None else SparseEncoder.load(config.base_model)
        self.eval_fn = eval_fn
        self.stream = None
        if config.streaming:
            self._open_stream(dataset, plan)
        else:
            self.dataset = dataset if dataset is not None else training_data.load_pairs(config.train_data,
                                                                                       config.columns)
            self.rows = [tuple(r) for r in self.dataset.rows]
            self.labels = self.dataset.labels
            self.label_shape = self.dataset.label_shape
            self.label_column = self.dataset.label_column
            self.plan = plan if plan is not None else self._make_plan()
            if not self.plan:
                raise ValueError("the training plan is empty (no optimizer steps)")
        self.total_steps = len(self.plan) if self.stream is None else config.max_steps
        self.output_dir = Path(config.output_dir)
        cfg = config
        self.settings = StepSettings(
            total_steps=self.total_steps, learning_rate=cfg.learning_rate,
            warmup_steps=warmup_steps_from(self.total_steps, cfg.warmup_ratio if cfg.warmup_steps is None else None,
                                           cfg.warmup_steps),
            lambda_d=cfg.lambda_d, lambda_q=cfg.lambda_q, regularizer_schedule=cfg.regularizer_schedule,
            regularizer_warmup_ratio=cfg.regularizer_warmup_ratio, scale=cfg.scale,
            document_threshold=cfg.document_threshold, query_threshold=cfg.query_threshold,
            document_idf_weighting=cfg.document_idf_weighting, dropout=cfg.dropout,
            loss=cfg.loss_spec_name(), loss_params=frozen_params(cfg.loss_params),
            use_document_regularizer_only=cfg.use_document_regularizer_only,
            cached_mini_batch_size=cfg.cached_mini_batch_size)
        if cfg.use_document_regularizer_only:  # every column is a document: no query term (lambda_q ignored)
            self.settings = dataclasses.replace(self.settings, lambda_q=None)
        self._check_loss_inputs()
        shape = self.encoder.model.shape
        if shape != "inference_free" and cfg.document_idf_weighting:
            raise ValueError(f"config key 'document_idf_weighting' needs static query weights; "
                             f"{config.base_model or 'the'} model is {shape} (queries through an MLM)")
        if shape == "symmetric":
            if cfg.freeze_query_weights:
                raise ValueError(f"config key 'freeze_query_weights' needs a query model of its own; "
                                 f"{config.base_model or 'the'} model is symmetric (queries through the document MLM)")
            if cfg.query_lr_multiplier != 1.0:
                raise ValueError("config key 'query_lr_multiplier' needs a query model of its own; the model is "
                                 "symmetric (queries through the document MLM, tuned by document_lr_multiplier)")
        self.max_document_length = cfg.max_document_length or self.encoder.max_seq_length
        self.max_query_length = cfg.max_query_length
        self.pack_length = (cfg.pack_length or self.max_document_length) if cfg.pack_documents else None
        self.row_multiple = 1

    def _check_loss_inputs(self) -> None:
        """The base loss against the data's columns and labels (jsplade.training.losses.LossSpec.check), before
        any compute: a loss that needs labels given none, labels of the wrong length, too few columns."""
        spec = BASE_LOSSES[self.settings.loss]
        where = self.config.train_data or "the training data"
        if not spec.needs_labels and self.label_shape is not None:  # as the reference: the loss ignores them
            logger.info("%s takes no labels: column %r is not used", spec.name, self.label_column)
            self.labels, self.label_shape = None, None
        n_columns = len(self.stream.columns) if self.stream is not None else len(self.rows[0])
        batch = self.config.batch_size if self.stream is not None else min(self.config.batch_size, len(self.rows))
        try:
            spec.check(n_columns, None if self.label_shape is None else (batch, *self.label_shape), batch,
                       self.encoder.model.vocab_size)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    # ------------------------------------------------------------------ streamed data
    def _open_stream(self, dataset, plan) -> None:
        """``streaming``: batches read lazily from ``train_data`` (jsplade.training.streaming), one process's
        rows each; the stream's position after each checkpointed step is saved with it."""
        cfg = self.config
        if dataset is not None or plan is not None or cfg.replay_batches:
            raise ValueError("config key 'streaming' reads train_data lazily: a dataset, plan or replay_batches "
                             "cannot be given with it")
        if cfg.max_steps is None:
            raise ValueError("config key 'streaming' needs 'max_steps': streamed data is not counted up front, so "
                             "the run's length (and its learning-rate and regularizer schedules) is given in steps")
        if cfg.grad_accum_steps > 1 and not cfg.drop_last:
            raise ValueError("config keys 'streaming' with 'grad_accum_steps' > 1 need 'drop_last' = true (the "
                             "micro-batches of a step must have one size)")
        n_proc = jax.process_count()
        if n_proc > 1:
            if cfg.mesh is None:
                raise ValueError(f"config key 'streaming' on {n_proc} processes needs 'mesh' (the global batch "
                                 "is laid over every process's devices)")
            if cfg.pack_documents:
                raise ValueError("config key 'streaming' on several processes needs padded batches: "
                                 "'pack_documents' packs a whole batch, which no single process holds")
            if not cfg.drop_last:
                raise ValueError(f"config key 'streaming' on {n_proc} processes needs 'drop_last' = true (each "
                                 "process's share of a global batch must have one size; a short last batch of "
                                 "one process's epoch has no counterpart on the others)")
            if cfg.batch_size % n_proc:
                raise ValueError(f"config key 'batch_size' = {cfg.batch_size} must be divisible by the "
                                 f"{n_proc} processes of a streamed run (each reads batch_size / processes "
                                 "rows of every batch)")
        self.stream = streaming.StreamingBatches(cfg.train_data, cfg.batch_size // n_proc, seed=self._sampler_seed(),
                                                 buffer_size=cfg.shuffle_buffer_size, columns=cfg.columns,
                                                 drop_last=cfg.drop_last, process_index=jax.process_index(),
                                                 process_count=n_proc)
        self.label_column = self.stream.label_column
        self.label_shape = None
        if self.label_column is not None:  # the first row's label: every later row must have its kind and length
            first = next(iter(self.stream.reader.iter_rows()), None)
            if first is not None:
                self.label_shape = (len(first.label),) if isinstance(first.label, tuple) else ()
        self.labels = None

    def _sampler_seed(self) -> int:
        return self.config.seed if self.config.sampler_seed is None else self.config.sampler_seed

    def _next_step_data(self, s: int):
        """(rows, micro-batches as row-index lists, labels or None, the ``indices`` metric) of step ``s``."""
        if self.stream is None:
            return self.rows, self.plan[s], self.labels, [list(b) for b in self.plan[s]]
        rows, labels, micro, ids = [], [], [], []
        for _ in range(self.config.grad_accum_steps):
            b = next(self.stream)
            micro.append(list(range(len(rows), len(rows) + len(b))))
            rows.extend(b.rows)
            labels.extend(b.labels or ())
            ids.append([list(i) for i in b.ids])
        use_labels = labels if self.label_shape is not None else None
        return rows, micro, use_labels, ids

    def _step_batch(self, s: int) -> tuple[dict[str, np.ndarray], list]:
        """The host batch of step ``s`` and its ``indices`` metric. On a streamed multi-process run each
        process reads and collates its own rows; the processes then agree on the padded lengths (the
        largest of theirs, so the batch equals one collated from all rows) and gather the row ids, in the
        global batch's order (process 0's rows first). A process that cannot read or tokenize its rows
        stops every process (``multihost.agree``) instead of leaving them waiting."""
        if self.stream is None or jax.process_count() == 1:
            rows, micro, labels, indices = self._next_step_data(s)
            return collate(self.encoder, rows, micro, self.max_query_length, self.max_document_length,
                           pack_length=self.pack_length, row_multiple=self.row_multiple, labels=labels), indices
        error, lengths = None, [0, 0]
        try:
            rows, micro, labels, ids = self._next_step_data(s)
            batch = collate(self.encoder, rows, micro, self.max_query_length, self.max_document_length,
                            labels=labels)
            lengths = [batch["query_ids"].shape[-1], batch["doc_ids"].shape[-1]]
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others are told
            error = exc
        agreed = multihost.agree(error is None, lengths, f"reading the rows of step {s}")
        if error is not None:
            raise error
        batch = pad_batch(batch, int(agreed[:, 0].max()), int(agreed[:, 1].max()))
        gathered = multihost.allgather_ints(np.asarray(ids, np.int64))  # [P, A, B/P, 2]: (shard, row)
        indices = [[list(map(int, i)) for p in range(gathered.shape[0]) for i in gathered[p, a]]
                   for a in range(gathered.shape[1])]
        return batch, indices

    # ------------------------------------------------------------------ plan
    def _make_plan(self) -> list[list[list[int]]]:
        """Optimizer steps, each a list of micro-batches (row index lists).

        Per epoch, consecutive batches are grouped ``grad_accum_steps`` at a time (the last group of an epoch
        may be shorter, as in transformers' Trainer); micro-batches of one step are stacked, so a batch of
        another size (a short last batch) starts a step of its own. Replayed batches are grouped the same way.
        """
        cfg = self.config
        a = cfg.grad_accum_steps
        if cfg.replay_batches:
            batches = json.loads(Path(cfg.replay_batches).read_text())
            plan = _group_micro_batches(training_data.ReplaySchedule(batches, len(self.rows)).batches, a)
            return plan[: cfg.max_steps] if cfg.max_steps is not None else plan
        sampler = training_data.NoDuplicatesBatchSampler(self.dataset, cfg.batch_size,
                                                         cfg.seed if cfg.sampler_seed is None else cfg.sampler_seed,
                                                         drop_last=cfg.drop_last)
        plan: list[list[list[int]]] = []
        epoch = 0
        while (epoch < cfg.epochs) if cfg.max_steps is None else (len(plan) < cfg.max_steps):
            plan.extend(_group_micro_batches(sampler.batches_for_epoch(epoch), a))
            epoch += 1
        return plan[: cfg.max_steps] if cfg.max_steps is not None else plan

    # ------------------------------------------------------------------ run
    def _optimizer(self) -> optax.GradientTransformation:
        cfg = self.config
        query_prefix = "query_mlm." if self.encoder.model.shape == "asymmetric" else "query."
        freeze = (lambda path: path.startswith(query_prefix)) if cfg.freeze_query_weights else None
        multipliers = {}
        if cfg.query_lr_multiplier != 1.0:
            multipliers[query_prefix] = cfg.query_lr_multiplier
        if cfg.document_lr_multiplier != 1.0:
            multipliers["mlm."] = cfg.document_lr_multiplier
        return make_optimizer(lr_schedule(self.settings), weight_decay=cfg.weight_decay, b1=cfg.adam_beta1,
                              b2=cfg.adam_beta2, eps=cfg.adam_epsilon, max_grad_norm=cfg.max_grad_norm,
                              freeze=freeze, lr_multipliers=multipliers or None)

    def fit(self, *, stop_after: int | None = None) -> TrainResult:
        """Train to the end of the plan (``stop_after`` simulates a kill after that many steps)."""
        cfg = self.config
        model = self.encoder.model
        model.mlm.with_compute(dtype=cfg.compute_dtype, remat=cfg.remat,
                               remat_keeps_attention=cfg.remat_keeps_attention, attention=cfg.attention)
        graphdef, params = nnx.split(model, nnx.Param)
        optimizer = self._optimizer()
        train_step = make_train_step(graphdef, optimizer, self.settings)
        state = {"params": params, "opt": optimizer.init(params), "step": jnp.asarray(0, jnp.int32),
                 "rng": jax.random.key_data(jax.random.key(cfg.seed))}
        self.mesh = None
        if cfg.mesh is not None:
            self.mesh = sharding.make_mesh(cfg.mesh)
            divisor = sharding.batch_divisor(self.mesh)
            sizes = [self.config.batch_size] if self.stream is not None else [len(mb) for st in self.plan for mb in st]
            if self.stream is not None and not self.config.drop_last:
                raise ValueError("config key 'streaming' on a mesh needs 'drop_last' = true (every batch divisible "
                                 f"by data x fsdp = {divisor})")
            if any(n % divisor for n in sizes):
                raise ValueError(f"batch size must be divisible by data x fsdp = {divisor} of mesh {cfg.mesh!r}")
            self.row_multiple = divisor
            state, state_shardings = sharding.shard_state(state, optimizer, self.mesh, model.logical_axes())
            label_shape = self.label_shape
            step_fn = sharding.jit_sharded_step(train_step, self.mesh, state_shardings, packed=cfg.pack_documents,
                                                label_ndim=None if label_shape is None else 2 + len(label_shape))
            if self.stream is not None and jax.process_count() > 1:  # each process holds only its own rows
                place = lambda b: sharding.global_batch_from_process_local(b, self.mesh)  # noqa: E731
            else:
                place = lambda b: sharding.global_batch_from_host(b, self.mesh)  # noqa: E731
        else:
            step_fn = jax.jit(train_step, donate_argnums=0)
            place = lambda b: b  # noqa: E731
        primary = jax.process_index() == 0

        self.output_dir.mkdir(parents=True, exist_ok=True)
        ckpt = CheckpointSteps(self.output_dir, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpointing)
        start = 0
        if not cfg.resume and ckpt.latest_step() is not None:
            ckpt.close()
            raise ValueError(f"{self.output_dir} already holds checkpoints (steps {ckpt.all_steps()}) and resume is "
                             "off: choose another output_dir, delete them, or set resume = true")
        if cfg.resume and ckpt.latest_step() is not None:
            state, start = self._restore(ckpt, state)
            logger.info("resumed from step %d", start)
        elif primary:
            self._write_run_files()
        log = MetricsLog(self.output_dir / "metrics.jsonl",
                         self.output_dir / "tensorboard" if cfg.tensorboard else None,
                         resume_from_step=start if start else None) if primary else _NullLog()
        history: list[dict[str, Any]] = []
        bar = None
        if cfg.progress_bar and primary:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=start, desc="training", unit="step")
        try:
            last = self.total_steps if stop_after is None else min(self.total_steps, stop_after)
            for s in range(start, last):
                batch, indices = self._step_batch(s)
                t0 = time.perf_counter()
                state, metrics = step_fn(state, place(batch))
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                metrics["step_seconds"] = time.perf_counter() - t0
                metrics["indices"] = indices
                if not math.isfinite(metrics["total"]):
                    log.log(s, metrics)
                    raise TrainingDivergedError(
                        f"loss is {metrics['total']} at step {s} (base {metrics['base_loss']}, document reg "
                        f"{metrics['document_regularizer_loss']}, query reg {metrics['query_regularizer_loss']}); "
                        f"training stopped. The last good checkpoint is kept in {ckpt.dir} "
                        f"(steps {ckpt.all_steps()}); lower the learning rate or check the data.")
                history.append({"step": s, **metrics})
                if (s + 1) % cfg.log_every == 0 or s + 1 == last:
                    log.log(s, {k: v for k, v in metrics.items()})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['total']:.4g}", lr=f"{metrics['lr']:.2e}",
                                    d_dims=f"{metrics['document_active_dims']:.0f}")
                done = s + 1
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < self.total_steps:
                    self._save(ckpt, state, done)
                if cfg.eval_every and done % cfg.eval_every == 0 and self.eval_fn is not None:
                    nnx.update(model, jax.tree.map(jnp.copy, state["params"]))
                    evals = self.eval_fn(self.encoder, done)
                    log.log(s, {f"eval/{k}": v for k, v in evals.items()})
            if stop_after is not None and last < self.total_steps:
                ckpt.wait()
                return TrainResult(self.encoder, last, history, self.output_dir, None)
            if ckpt.latest_step() != self.total_steps:  # a finished run resumed: its last step is saved already
                self._save(ckpt, state, self.total_steps, force=True)
            ckpt.wait()
        finally:
            if bar is not None:
                bar.close()
            log.close()
            ckpt.close()
        nnx.update(model, self._host_params(state["params"]))
        export_dir = self._export() if primary else None
        return TrainResult(self.encoder, self.total_steps, history, self.output_dir, export_dir)

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def _host_params(params):
        if jax.process_count() == 1:
            return jax.device_get(params)
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(params, tiled=True)

    def _save(self, ckpt: CheckpointSteps, state, step: int, force: bool = False) -> None:
        """A checkpoint; on streamed data with its position: one stream state, or on P processes the list of
        the P states in process order (gathered, so every process saves the same progress JSON)."""
        data_state = None
        if self.stream is not None:
            data_state = self.stream.state()
            if jax.process_count() > 1:
                data_state = multihost.allgather_json(data_state)
        save_state(ckpt, state, step, self.total_steps, force=force, data_state=data_state)

    def _restore(self, ckpt: CheckpointSteps, state):
        state, done, progress = restore_state(ckpt, state, self.total_steps, self.mesh, with_progress=True)
        if self.stream is not None:
            if "data_state" not in progress:
                raise ValueError(f"{ckpt.dir}: checkpoint {done} has no position in the streamed data (written by a "
                                 "run without 'streaming'); use another output_dir or resume = false")
            self.stream = streaming.StreamingBatches.from_state(self.config.train_data,
                                                                self._own_data_state(ckpt, done, progress))
        return state, done

    @staticmethod
    def _own_data_state(ckpt: CheckpointSteps, done: int, progress: dict[str, Any]) -> dict[str, Any]:
        """This process's stream state in a checkpoint's progress JSON (see ``_save``); a checkpoint of a run
        on another number of processes is refused (its rows were split another way)."""
        states = progress["data_state"]
        written_by = len(states) if isinstance(states, list) else 1
        n_proc = jax.process_count()
        if written_by != n_proc:
            raise ValueError(f"{ckpt.dir}: checkpoint {done} was written by a streamed run on {written_by} "
                             f"process(es), this run has {n_proc}: the data is split between processes, so it "
                             "resumes only on as many; use another output_dir or resume = false")
        own = states[jax.process_index()] if isinstance(states, list) else states
        cfg = own.get("config", {}) if isinstance(own, dict) else {}
        if cfg.get("process_index", jax.process_index()) != jax.process_index():
            raise ValueError(f"{ckpt.dir}: checkpoint {done}: stream state {jax.process_index()} belongs to process "
                             f"{cfg.get('process_index')}")
        return own

    def _write_run_files(self) -> None:
        cfg = self.config
        (self.output_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        enc = self.encoder
        if enc.source is not None and Path(enc.source).is_dir():
            copy_template(enc.source, self.output_dir)
        write_meta(self.output_dir, enc.to_parts().checkpoint_meta())

    def _export(self) -> Path:
        dst = self.output_dir / "model"
        self.encoder.save(dst, layout=self.config.export_layout, naming=self.config.export_naming, overwrite=True)
        return dst
