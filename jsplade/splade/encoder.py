"""``SparseEncoder``: the user-facing API, sentence-transformers compatible in behaviour.

    enc = SparseEncoder.from_pretrained("path/or/hub-id")
    Q = enc.encode_query(["Which planet is known as the Red Planet?"])   # csr_matrix [1, V]
    D = enc.encode_document(docs)                                         # csr_matrix [n, V]
    S = enc.similarity(Q, D)                                              # np.ndarray [1, n]
    enc.decode(Q[0], top_k=10)                                            # [(token, weight), ...]

Documents go through the document backbone (any ``jsplade.backbones`` masked-LM) and SPLADE pooling.
Queries of an inference-free model never touch a model: token ids (no special tokens) → static weights; a
symmetric model runs them through the document backbone, an asymmetric one through its query backbone
(special tokens included, as the MLM reads them). Texts are sorted by token length, batched under a token budget,
padded to a fixed ladder of lengths (``jsplade.splade.batching.ENCODE_LENGTH_LADDER``: a corpus compiles a
handful of programs) and returned in input order.

Devices: every MLM batch runs data-parallel over ``encoder.devices`` (``set_devices``): the weights are
replicated on each device and the batch's rows split between them (rows padded to a multiple of the device
count). The default is every local device of JAX's default backend, except on CPU, where it is one device:
``jax_num_cpu_devices`` splits the same cores, so more CPU "devices" add no compute (ask for them with
``set_devices("local")``). Each row is computed on its own, so the vectors on any device count have the same
active entries and agree to float32 rounding (the row's batch shape moves the rounding: 1.5e-6 relative at
most on 8 CPU devices against one, tested); the same device count gives the same bits every time. On a
multi-host run each process uses its own local devices; dividing a corpus between processes is the job of
``jsplade.retrieval.corpus``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
import scipy.sparse as sp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.tokenizer import WordPieceTokenizer, validate_texts
from jsplade.checkpoints.orbax_dir import is_checkpoint_dir
from jsplade.checkpoints.parts import EncoderParts, read_checkpoint, read_sparse_encoder
from jsplade.checkpoints.st_export import ExportSummary, write_sparse_encoder
from jsplade.splade.batching import length_batches, pad_rows, pow2_at_least
from jsplade.splade.model import SpladeModel
from jsplade.splade.packing import pack_documents
from jsplade.splade.sparse import (as_csr, check_max_active_dims, dense_to_csr, sparsity, topk_csr_rows,
                                   topk_dense_rows)
from jsplade.splade.static_embedding import StaticQueryEmbedding, query_rows_csr

logger = logging.getLogger("jsplade")

# Config keys that record where a checkpoint came from, not what it computes (left out of fingerprints).
_CONFIG_METADATA = frozenset({"architectures", "auto_map", "transformers_version", "_name_or_path", "torch_dtype",
                              "dtype", "model_type_source", "id2label", "label2id"})
# Progress bars turn on by themselves above this many texts.
_AUTO_PROGRESS = 2000


class SparseEncoder:
    """A SPLADE encoder: documents through an MLM + pooling; queries through static weights (inference-free,
    no model call), through the same MLM and pooling (symmetric SPLADE) or through a query MLM and its
    pooling (asymmetric). ``query_max_seq_length`` truncates MLM queries (default: ``max_seq_length``)."""

    def __init__(self, model: SpladeModel, document_tokenizer: WordPieceTokenizer,
                 query_tokenizer: WordPieceTokenizer | None = None, *, max_seq_length: int,
                 similarity_fn_name: str = "dot", prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None, max_active_dims: int | None = None,
                 tokens_per_batch: int = 16384, source: Path | None = None, query_max_seq_length: int | None = None,
                 devices=None):
        self.model = model
        self.document_tokenizer = document_tokenizer
        self.query_tokenizer = query_tokenizer or document_tokenizer
        self.max_seq_length = int(max_seq_length)
        self.query_max_seq_length = int(query_max_seq_length or max_seq_length)
        if similarity_fn_name != "dot":
            raise ValueError(f"similarity_fn_name {similarity_fn_name!r} is not supported (only 'dot')")
        self.similarity_fn_name = similarity_fn_name
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.max_active_dims = check_max_active_dims(max_active_dims)
        self.tokens_per_batch = int(tokens_per_batch)
        self.source = source
        self._check_vocab()
        self.set_devices(devices)
        self._doc_fn = jax.jit(_pool_documents, static_argnums=0)
        self._query_fn = jax.jit(_pool_queries, static_argnums=0)
        self._packed_fn = jax.jit(_pool_packed, static_argnums=(0, 7))

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_parts(cls, parts: EncoderParts) -> SparseEncoder:
        """An encoder of ``parts`` (``jsplade.checkpoints.parts``: backbone, static weights, pooling, tokenizers,
        settings); the backbone module is used as it is, not copied."""
        query = None if parts.query_weights is None else StaticQueryEmbedding(parts.query_weights)
        model = SpladeModel(parts.mlm, query, parts.pooling_strategy, parts.activation, query_mlm=parts.query_mlm,
                            query_pooling_strategy=parts.query_pooling_strategy,
                            query_activation=parts.query_activation)
        return cls(model, parts.document_tokenizer, parts.query_tokenizer, max_seq_length=parts.max_seq_length,
                   similarity_fn_name=parts.similarity_fn_name, prompts=parts.prompts,
                   default_prompt_name=parts.default_prompt_name, max_active_dims=parts.max_active_dims,
                   source=parts.source, query_max_seq_length=parts.query_max_seq_length)

    def to_parts(self) -> EncoderParts:
        """This encoder as ``EncoderParts`` (what the writers take); shares the model's arrays."""
        m = self.model
        asymmetric = {} if m.query_mlm is None else {
            "query_mlm": m.query_mlm, "query_pooling_strategy": m.query_pooling_strategy,
            "query_activation": m.query_activation, "query_max_seq_length": self.query_max_seq_length}
        return EncoderParts(m.mlm, self.query_weights, self.document_tokenizer, self.query_tokenizer,
                            m.pooling_strategy, m.activation, self.max_seq_length,
                            similarity_fn_name=self.similarity_fn_name, prompts=dict(self.prompts),
                            default_prompt_name=self.default_prompt_name, max_active_dims=self.max_active_dims,
                            source=self.source, **asymmetric)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, compute: ComputeOptions | None = None,
                        max_active_dims: int | None = None) -> SparseEncoder:
        """Load a sentence-transformers SparseEncoder directory (ST-native or OpenSearch hub layout,
        5.x or 6.x dialect), a bare OpenSearch MLM folder with ``idf.json`` / ``query_token_weights.txt``
        (read as the equivalent sentence-transformers model, ``jsplade.checkpoints.st_format``), or a hub id
        through huggingface_hub. Only JSON, text and safetensors are read."""
        parts = read_sparse_encoder(path_or_hub_id, compute=compute)
        if max_active_dims is not None:
            parts.max_active_dims = max_active_dims
        return cls.from_parts(parts)

    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, step: int | None = None, *,
                        compute: ComputeOptions | None = None) -> SparseEncoder:
        """A jsplade (orbax) training checkpoint directory: latest step unless ``step``."""
        return cls.from_parts(read_checkpoint(run_dir, step, compute=compute))

    @classmethod
    def load(cls, path_or_hub_id: str | Path, **kwargs) -> SparseEncoder:
        """``from_checkpoint`` for a jsplade checkpoint directory, ``from_pretrained`` otherwise."""
        if isinstance(path_or_hub_id, (str, Path)) and is_checkpoint_dir(path_or_hub_id):
            return cls.from_checkpoint(path_or_hub_id, compute=kwargs.get("compute"))
        return cls.from_pretrained(path_or_hub_id, **kwargs)

    def save(self, path: str | Path, *, layout: str = "st", naming: str | None = None, overwrite: bool = False,
             model_card_metrics: dict | None = None) -> ExportSummary:
        """Write a sentence-transformers directory (``jsplade.checkpoints.st_export``): ``layout`` "st"
        (ST-native) or "opensearch" (hub layout with idf.json / query_token_weights.txt), ``naming`` one of the
        backbone's weight namings (default its canonical one; GTE: "new", the hub checkpoint's new-impl names,
        or "gte", transformers' native GteForMaskedLM, which loads without remote code)."""
        return export_sparse_encoder(self, path, layout=layout, naming=naming, overwrite=overwrite,
                                     model_card_metrics=model_card_metrics)

    def _check_vocab(self) -> None:
        v = self.model.vocab_size
        if self.document_tokenizer.vocab_size != v or self.query_tokenizer.vocab_size != v:
            raise ValueError(f"vocabulary sizes disagree: model vocab_size {v}, document tokenizer "
                             f"{self.document_tokenizer.vocab_size}, query tokenizer {self.query_tokenizer.vocab_size}")

    # ------------------------------------------------------------------ devices
    def set_devices(self, devices=None) -> SparseEncoder:
        """Devices that MLM encoding runs on, data-parallel: None (default: every local device of the default
        backend, one device on CPU), "local" (every local device), an int n (the first n local devices), a
        sequence of local ``jax.Device`` or a ``jax.sharding.Mesh`` (its local devices). Returns ``self``."""
        self.devices = resolve_devices(devices)
        return self

    def fingerprint(self) -> str:
        """"sha256:<hex>" of everything that decides a document vector: the document MLM's weights (names,
        dtypes, shapes, bytes) and configuration, its compute dtype, pooling, activation, ``max_seq_length``,
        the document prompt and the document tokenizer's vocabulary. Two encoders with the same fingerprint give the
        same document vectors; encoded-corpus shards record it (``jsplade.retrieval.shards``)."""
        h = hashlib.sha256()
        cfg = self.model.mlm.config
        desc = {"backbone": type(self.model.mlm).__name__,
                "config": {k: v for k, v in cfg.to_hf_dict().items() if k not in _CONFIG_METADATA},
                "pooling": self.model.pooling_strategy, "activation": self.model.activation,
                "max_seq_length": self.max_seq_length, "prompt": self._with_prompt([""], "document", None, None)[0],
                "compute_dtype": getattr(getattr(self.model.mlm, "compute", None), "dtype", "float32")}
        h.update(json.dumps(desc, sort_keys=True, default=str).encode())
        tok = self.document_tokenizer
        h.update("\n".join(tok.id_to_token(i) for i in range(tok.vocab_size)).encode())
        for path, value in sorted(nnx.to_flat_state(nnx.state(self.model.mlm, nnx.Param)), key=lambda kv: str(kv[0])):
            arr = np.asarray(value.get_value() if hasattr(value, "get_value") else value)
            h.update(f"{'/'.join(map(str, path))}|{arr.dtype}|{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return "sha256:" + h.hexdigest()

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def tokenizer(self) -> WordPieceTokenizer:
        return self.document_tokenizer

    @property
    def query_weights(self) -> np.ndarray | None:
        """The static query weights [V] (None for a symmetric model)."""
        return None if self.model.query is None else np.asarray(self.model.query.weight.get_value())

    @property
    def shape(self) -> str:
        """"inference_free" (static query weights), "symmetric" (queries through the document MLM) or
        "asymmetric" (queries through their own MLM)."""
        return self.model.shape

    # ------------------------------------------------------------------ encoding
    def encode_query(self, texts: Sequence[str], batch_size: int = 32, max_active_dims: int | None = None, *,
                     dense: bool = False, show_progress_bar: bool | None = None, prompt_name: str | None = None,
                     prompt: str | None = None):
        """Query vectors [n, V] float32 (CSR, or ``np.ndarray`` with ``dense=True``): inference-free models
        look up static weights (no model call); symmetric and asymmetric ones run their query MLM."""
        texts = self._with_prompt(validate_texts(texts, "texts"), "query", prompt_name, prompt)
        _check_batch_size(batch_size)
        k = check_max_active_dims(max_active_dims) or self.max_active_dims
        if not self.model.inference_free:
            ids, _ = self.query_tokenizer.encode_documents(texts, self.query_max_seq_length)
            out = self._encode_token_ids(ids, batch_size, k, show_progress_bar, self._query_fn,
                                         self.query_max_seq_length, "Encoding queries")
            return out.toarray() if dense else out
        ids = self.query_tokenizer.encode_queries(texts)
        out = topk_csr_rows(query_rows_csr(ids, self.query_weights), k)
        return out.toarray() if dense else out

    def encode_document(self, texts: Sequence[str], batch_size: int = 32, max_active_dims: int | None = None, *,
                        dense: bool = False, show_progress_bar: bool | None = None, prompt_name: str | None = None,
                        prompt: str | None = None, packing: bool = False, pack_length: int = 512):
        """Document vectors [n, V] float32 (CSR, or ``np.ndarray`` with ``dense=True``).

        ``packing=True`` packs documents of at most ``pack_length`` tokens several to a row (segment ids,
        per-document positions and pooling; same vectors as the padded path up to float rounding)."""
        _check_batch_size(batch_size)
        ids, n_truncated = self.tokenize_documents(texts, prompt_name=prompt_name, prompt=prompt)
        if n_truncated:
            logger.warning("%d of %d documents were longer than max_seq_length=%d tokens and were truncated",
                           n_truncated, len(ids), self.max_seq_length)
        rows = self.encode_document_ids(ids, batch_size, max_active_dims, show_progress_bar=show_progress_bar,
                                        packing=packing, pack_length=pack_length)
        return rows.toarray() if dense else rows

    def tokenize_documents(self, texts: Sequence[str], *, prompt_name: str | None = None,
                           prompt: str | None = None) -> tuple[list[np.ndarray], int]:
        """(token ids per document, with the document prompt and special tokens, truncated to
        ``max_seq_length``; how many were truncated): the first half of ``encode_document``."""
        texts = self._with_prompt(validate_texts(texts, "texts"), "document", prompt_name, prompt)
        return self.document_tokenizer.encode_documents(texts, self.max_seq_length)

    def encode_document_ids(self, ids: Sequence[np.ndarray], batch_size: int = 32,
                            max_active_dims: int | None = None, *, show_progress_bar: bool | None = None,
                            packing: bool = False, pack_length: int = 512) -> sp.csr_matrix:
        """Document vectors [n, V] (CSR float32) of token-id rows from ``tokenize_documents``: the second
        half of ``encode_document``."""
        _check_batch_size(batch_size)
        k = check_max_active_dims(max_active_dims) or self.max_active_dims
        ids = [np.asarray(x) for x in ids]
        for i, row in enumerate(ids):
            if row.ndim != 1 or row.size == 0 or not np.issubdtype(row.dtype, np.integer):
                raise ValueError(f"ids[{i}] must be a non-empty 1-D integer array, got shape {list(row.shape)} "
                                 f"{row.dtype}")
            if row.size > self.max_seq_length:
                raise ValueError(f"ids[{i}] has {row.size} tokens, more than max_seq_length={self.max_seq_length}")
            if row.min() < 0 or row.max() >= self.vocab_size:
                raise ValueError(f"ids[{i}] holds a token id outside [0, {self.vocab_size})")
        if packing:
            return self._encode_document_ids_packed(ids, batch_size, k, show_progress_bar, pack_length)
        return self._encode_document_ids(ids, batch_size, k, show_progress_bar)

    def encode(self, texts: Sequence[str], **kwargs):
        """Plain ``encode`` follows the Router's default route, which is ``document``."""
        return self.encode_document(texts, **kwargs)

    def _encode_document_ids(self, ids: list[np.ndarray], batch_size: int, k: int | None,
                             show_progress_bar: bool | None) -> sp.csr_matrix:
        return self._encode_token_ids(ids, batch_size, k, show_progress_bar, self._doc_fn, self.max_seq_length,
                                      "Encoding documents")

    def _encode_token_ids(self, ids: list[np.ndarray], batch_size: int, k: int | None, show_progress_bar: bool | None,
                          pool_fn, max_len: int, desc: str) -> sp.csr_matrix:
        """Vectors of token-id rows through ``pool_fn`` (documents or MLM queries), in input order."""
        n = len(ids)
        if n == 0:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        lengths = np.array([len(x) for x in ids])
        graphdef, state = nnx.split(self.model)
        place_rows, state = self._placement(state)
        batches = length_batches(lengths, batch_size, self.tokens_per_batch, max_len)
        pieces: list[sp.csr_matrix] = [None] * len(batches)  # type: ignore[list-item]
        progress = _progress(len(batches), show_progress_bar, n >= _AUTO_PROGRESS, desc)
        for b, (rows, pad_len) in enumerate(batches):
            ids_BxL, mask_BxL = pad_rows(ids, rows, pad_len, rows_for_devices(pow2_at_least(len(rows)),
                                                                              len(self.devices)))
            pooled = np.asarray(pool_fn(graphdef, state, place_rows(ids_BxL), place_rows(mask_BxL)))[: len(rows)]
            pieces[b] = dense_to_csr(topk_dense_rows(pooled, k))
            if progress is not None:
                progress.update(1)
        if progress is not None:
            progress.close()
        order = np.concatenate([rows for rows, _ in batches])
        stacked = sp.vstack(pieces, format="csr", dtype=np.float32)
        inverse = np.empty(n, np.int64)
        inverse[order] = np.arange(n)
        return stacked[inverse]

    def _encode_document_ids_packed(self, ids: list[np.ndarray], batch_size: int, k: int | None,
                                    show_progress_bar: bool | None, pack_length: int) -> sp.csr_matrix:
        pack_length = min(int(pack_length), self.max_seq_length)
        n = len(ids)
        short = [i for i in range(n) if len(ids[i]) <= pack_length]
        long_ = [i for i in range(n) if len(ids[i]) > pack_length]
        out: list[sp.csr_matrix | None] = [None] * n
        if long_:
            rows = self._encode_document_ids([ids[i] for i in long_], batch_size, k, show_progress_bar)
            for j, i in enumerate(long_):
                out[i] = rows[j]
        graphdef, state = nnx.split(self.model)
        place_rows, state = self._placement(state)
        rows_per_call = rows_for_devices(max(1, min(batch_size, self.tokens_per_batch // pack_length)),
                                         len(self.devices))
        # Pack everything, then run the rows in groups of ``rows_per_call``.
        order = sorted(short, key=lambda i: -len(ids[i]))
        packed = pack_documents([ids[i] for i in order], pack_length) if order else None
        if packed is not None:
            n_rows = packed.input_ids.shape[0]
            groups = pow2_at_least(packed.n_groups)
            pooled_rows = []
            for start in range(0, n_rows, rows_per_call):
                sl = slice(start, start + rows_per_call)
                arrays = [packed.input_ids[sl], packed.attention_mask[sl], packed.position_ids[sl],
                          packed.segment_ids[sl], packed.group_ids[sl]]
                real = arrays[0].shape[0]
                if real < rows_per_call:
                    pad = rows_per_call - real
                    arrays = [np.pad(a, ((0, pad), (0, 0)), constant_values=(-1 if j == 4 else 0))
                              for j, a in enumerate(arrays)]
                pooled = self._packed_fn(graphdef, state, *[place_rows(a) for a in arrays], groups)
                pooled_rows.append(np.asarray(pooled)[:real])
            pooled_all = np.concatenate(pooled_rows, axis=0)  # [R, G, V]
            vectors = pooled_all[packed.doc_slot[:, 0], packed.doc_slot[:, 1]]
            csr = dense_to_csr(topk_dense_rows(vectors, k))
            for j, i in enumerate(order):
                out[i] = csr[j]
        return sp.vstack(out, format="csr", dtype=np.float32)

    def _placement(self, state):
        """(rows -> device arrays, the state placed): rows split over ``self.devices``, weights replicated."""
        if len(self.devices) == 1:
            device = self.devices[0]
            return (lambda a: jax.device_put(a, device)), jax.device_put(state, device)
        mesh = Mesh(np.asarray(self.devices), ("data",))
        rows, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
        return (lambda a: jax.device_put(a, rows)), jax.device_put(state, replicated)

    def _with_prompt(self, texts: list[str], route: str, prompt_name: str | None, prompt: str | None) -> list[str]:
        if prompt is None:
            names = [prompt_name] if prompt_name else (["query"] if route == "query" else
                                                       ["document", "passage", "corpus"])
            if prompt_name is not None and prompt_name not in self.prompts:
                raise ValueError(f"prompt_name {prompt_name!r} is not among the model's prompts {sorted(self.prompts)}")
            prompt = next((self.prompts[n] for n in names if n in self.prompts), "")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return [prompt + t for t in texts] if prompt else texts

    # ------------------------------------------------------------------ scoring and inspection
    def similarity(self, queries, documents) -> np.ndarray:
        """Dot products [n_queries, n_documents] float32 (accumulated in float64)."""
        q = as_csr(queries, self.vocab_size, "queries")
        d = as_csr(documents, self.vocab_size, "documents")
        return np.asarray((q.astype(np.float64) @ d.astype(np.float64).T).toarray(), dtype=np.float32)

    def similarity_pairwise(self, queries, documents) -> np.ndarray:
        q = as_csr(queries, self.vocab_size, "queries")
        d = as_csr(documents, self.vocab_size, "documents")
        if q.shape[0] != d.shape[0]:
            raise ValueError(f"similarity_pairwise needs as many queries as documents ({q.shape[0]} vs {d.shape[0]})")
        return np.asarray(q.astype(np.float64).multiply(d.astype(np.float64)).sum(axis=1), np.float32).reshape(-1)

    def decode(self, embedding, top_k: int | None = 10) -> list[tuple[str, float]]:
        """(token, weight) pairs of one vector, largest weight first (ties by token id)."""
        row = as_csr(embedding, self.vocab_size, "embedding")
        if row.shape[0] != 1:
            raise ValueError(f"decode takes one vector, got {row.shape[0]} rows; decode each row separately")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        cols, vals = row.indices, row.data
        order = np.lexsort((cols, -vals))
        if top_k is not None:
            order = order[:top_k]
        return [(self.document_tokenizer.id_to_token(int(cols[i])), float(vals[i])) for i in order]

    def sparsity(self, embeddings) -> dict[str, float]:
        return sparsity(as_csr(embeddings, self.vocab_size))

    def __repr__(self) -> str:
        cfg = self.model.mlm.config
        return (f"SparseEncoder(shape={self.shape}, backbone={type(self.model.mlm).__name__}, vocab={self.vocab_size}, "
                f"layers={cfg.num_hidden_layers}, hidden={cfg.hidden_size}, "
                f"max_seq_length={self.max_seq_length}, pooling={self.model.pooling_strategy}/"
                f"{self.model.activation}, source={self.source})")


def _pool_documents(graphdef, state, ids_BxL, mask_BxL):
    model = nnx.merge(graphdef, state)
    return model.encode_documents(ids_BxL, mask_BxL)


def _pool_queries(graphdef, state, ids_BxL, mask_BxL):
    model = nnx.merge(graphdef, state)
    return model.encode_query_tokens(ids_BxL, mask_BxL)


def _pool_packed(graphdef, state, ids, mask, positions, segments, groups, n_groups):
    model = nnx.merge(graphdef, state)
    return model.encode_packed(ids, mask, positions, segments, groups, n_groups)


def resolve_devices(devices=None) -> tuple:
    """The local devices ``SparseEncoder.set_devices`` means by ``devices`` (see there)."""
    local = jax.local_devices()
    if devices is None:
        return tuple(local[:1]) if local[0].platform == "cpu" else tuple(local)
    if isinstance(devices, str):
        if devices != "local":
            raise ValueError(f"devices must be None, 'local', a count, a list of devices or a Mesh, got {devices!r}")
        return tuple(local)
    if isinstance(devices, Mesh):
        devices = [d for d in devices.devices.flat if d.process_index == jax.process_index()]
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices={devices}: this process has {len(local)} local devices")
        return tuple(local[:int(devices)])
    try:
        out = tuple(devices)
    except TypeError:
        raise TypeError(f"devices must be None, 'local', a count, a list of devices or a Mesh, "
                        f"got {type(devices).__name__}") from None
    if not out or not all(isinstance(d, jax.Device) for d in out):
        raise ValueError(f"devices must be a non-empty list of jax devices, got {list(out)!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"devices lists a device twice: {list(out)}")
    foreign = [d for d in out if d.process_index != jax.process_index()]
    if foreign:
        raise ValueError(f"devices {foreign} belong to another process; each process encodes on its own devices")
    return out


def rows_for_devices(rows: int, n_devices: int) -> int:
    """``rows`` rounded up to a multiple of the device count (every device gets the same number of rows)."""
    return -(-rows // n_devices) * n_devices


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _progress(total: int, show: bool | None, auto: bool, desc: str):
    if show is False or (show is None and not auto):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch")


def export_sparse_encoder(encoder: SparseEncoder, dst: str | Path, **kwargs) -> ExportSummary:
    """Write ``encoder`` to ``dst`` as a sentence-transformers directory: ``SparseEncoder.save`` with the
    writer's every option (``jsplade.checkpoints.st_export.write_sparse_encoder``: ``layout``, ``naming``,
    ``overwrite``, ``max_shard_bytes``, ``model_card_metrics``, ``progress``)."""
    if not isinstance(encoder, SparseEncoder):
        raise TypeError(f"encoder must be a jsplade.SparseEncoder, got {type(encoder).__name__}")
    return write_sparse_encoder(encoder.to_parts(), dst, **kwargs)
