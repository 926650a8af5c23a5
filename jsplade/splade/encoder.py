"""``SparseEncoder``: the user-facing API, sentence-transformers compatible in behaviour.

    enc = SparseEncoder.from_pretrained("path/or/hub-id")
    Q = enc.encode_query(["Which planet is known as the Red Planet?"])   # csr_matrix [1, V]
    D = enc.encode_document(docs)                                         # csr_matrix [n, V]
    S = enc.similarity(Q, D)                                              # np.ndarray [1, n]
    enc.decode(Q[0], top_k=10)                                            # [(token, weight), ...]

Queries never touch the model: token ids (no special tokens) → static weights. Documents go through
the GTE MLM and SPLADE pooling. Documents are sorted by token length, batched under a token budget,
padded to a fixed ladder of lengths (``jsplade.splade.batching.ENCODE_LENGTH_LADDER``: a corpus compiles a
handful of programs) and returned in input order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
import scipy.sparse as sp
from flax import nnx

from jsplade.splade.batching import ENCODE_LENGTH_LADDER, padded_length, pow2_at_least
from jsplade.checkpoints.hf_folder import load_mlm
from jsplade.backbones.gte import ComputeOptions
from jsplade.splade.sparse import (as_csr, check_max_active_dims, dense_to_csr, sparsity, topk_csr_rows,
                                  topk_dense_rows)
from jsplade.splade.model import SpladeModel
from jsplade.splade.static_embedding import StaticQueryEmbedding, query_rows_csr
from jsplade.checkpoints.st_format import read_query_weights, read_sparse_encoder_dir, resolve_model_path
from jsplade.backbones.tokenizer import WordPieceTokenizer, document_max_length, validate_texts

logger = logging.getLogger("jsplade")

# Progress bars turn on by themselves above this many texts.
_AUTO_PROGRESS = 2000


class SparseEncoder:
    """Asymmetric inference-free SPLADE encoder (query: static weights; document: GTE MLM + pooling)."""

    def __init__(self, model: SpladeModel, document_tokenizer: WordPieceTokenizer,
                 query_tokenizer: WordPieceTokenizer | None = None, *, max_seq_length: int,
                 similarity_fn_name: str = "dot", prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None, max_active_dims: int | None = None,
                 tokens_per_batch: int = 16384, source: Path | None = None):
        self.model = model
        self.document_tokenizer = document_tokenizer
        self.query_tokenizer = query_tokenizer or document_tokenizer
        self.max_seq_length = int(max_seq_length)
        if similarity_fn_name != "dot":
            raise ValueError(f"similarity_fn_name {similarity_fn_name!r} is not supported (only 'dot')")
        self.similarity_fn_name = similarity_fn_name
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.max_active_dims = check_max_active_dims(max_active_dims)
        self.tokens_per_batch = int(tokens_per_batch)
        self.source = source
        self._check_vocab()
        self._doc_fn = jax.jit(_pool_documents, static_argnums=0)
        self._packed_fn = jax.jit(_pool_packed, static_argnums=(0, 7))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, compute: ComputeOptions | None = None,
                        max_active_dims: int | None = None) -> SparseEncoder:
        """Load a sentence-transformers SparseEncoder directory (ST-native or OpenSearch hub layout,
        5.x or 6.x dialect), or a hub id through huggingface_hub. Only JSON, text and safetensors are read."""
        if not isinstance(path_or_hub_id, (str, Path)):
            raise TypeError(f"path_or_hub_id must be a str or Path, got {type(path_or_hub_id).__name__}")
        root = resolve_model_path(str(path_or_hub_id))
        spec = read_sparse_encoder_dir(root)
        doc_tok = WordPieceTokenizer.from_dir(spec.document.folder)
        try:
            query_tok = WordPieceTokenizer.from_dir(spec.query.folder)
        except (FileNotFoundError, ValueError):
            query_tok = doc_tok  # the query tokenizer is the document tokenizer in every published model
        mlm = load_mlm(spec.document.folder, compute=compute)
        weights = read_query_weights(spec.query, query_tok.get_vocab())
        _check_sizes(mlm.config.vocab_size, spec.document.folder / "config.json",
                     doc_tok.vocab_size, spec.document.folder, len(weights), spec.query)
        model = SpladeModel(mlm, StaticQueryEmbedding(weights), spec.pooling.pooling_strategy,
                            spec.pooling.activation_function)
        max_len = document_max_length(spec.document.max_seq_length, mlm.config.max_position_embeddings,
                                      doc_tok.model_max_length)
        return cls(model, doc_tok, query_tok, max_seq_length=max_len,
                   similarity_fn_name=spec.similarity_fn_name, prompts=spec.prompts,
                   default_prompt_name=spec.default_prompt_name,
                   max_active_dims=max_active_dims if max_active_dims is not None else spec.max_active_dims,
                   source=root)

    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, step: int | None = None, *,
                        compute: ComputeOptions | None = None) -> SparseEncoder:
        """A jsplade (orbax) training checkpoint directory: latest step unless ``step``."""
        from jsplade.checkpoints.convert import load_checkpoint_encoder

        return load_checkpoint_encoder(run_dir, step, compute=compute)

    @classmethod
    def load(cls, path_or_hub_id: str | Path, **kwargs) -> SparseEncoder:
        """``from_checkpoint`` for a jsplade checkpoint directory, ``from_pretrained`` otherwise."""
        from jsplade.checkpoints.orbax_dir import is_checkpoint_dir

        if isinstance(path_or_hub_id, (str, Path)) and is_checkpoint_dir(path_or_hub_id):
            return cls.from_checkpoint(path_or_hub_id, compute=kwargs.get("compute"))
        return cls.from_pretrained(path_or_hub_id, **kwargs)

    def save(self, path: str | Path, *, layout: str = "st", naming: str = "new", overwrite: bool = False,
             model_card_metrics: dict | None = None):
        """Write a sentence-transformers directory (``jsplade.checkpoints.st_export``): ``layout`` "st" (ST-native) or
        "opensearch" (hub layout with idf.json / query_token_weights.txt), ``naming`` "new" (new-impl, the
        hub checkpoint's) or "gte" (transformers' native GteForMaskedLM: loads without remote code)."""
        from jsplade.checkpoints.st_export import export_sparse_encoder

        return export_sparse_encoder(self, path, layout=layout, naming=naming, overwrite=overwrite,
                                     model_card_metrics=model_card_metrics)

    def _check_vocab(self) -> None:
        v = self.model.vocab_size
        if self.document_tokenizer.vocab_size != v or self.query_tokenizer.vocab_size != v:
            raise ValueError(f"vocabulary sizes disagree: model vocab_size {v}, document tokenizer "
                             f"{self.document_tokenizer.vocab_size}, query tokenizer {self.query_tokenizer.vocab_size}")

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def tokenizer(self) -> WordPieceTokenizer:
        return self.document_tokenizer

    @property
    def query_weights(self) -> np.ndarray:
        return np.asarray(self.model.query.weight.get_value())

    # ------------------------------------------------------------------ encoding
    def encode_query(self, texts: Sequence[str], batch_size: int = 32, max_active_dims: int | None = None, *,
                     dense: bool = False, show_progress_bar: bool | None = None, prompt_name: str | None = None,
                     prompt: str | None = None):
        """Query vectors [n, V] float32 (CSR, or ``np.ndarray`` with ``dense=True``). No model call."""
        texts = self._with_prompt(validate_texts(texts, "texts"), "query", prompt_name, prompt)
        _check_batch_size(batch_size)
        k = check_max_active_dims(max_active_dims) or self.max_active_dims
        ids = self.query_tokenizer.encode_queries(texts)
        out = topk_csr_rows(query_rows_csr(ids, self.query_weights), k)
        return out.toarray() if dense else out

    def encode_document(self, texts: Sequence[str], batch_size: int = 32, max_active_dims: int | None = None, *,
                        dense: bool = False, show_progress_bar: bool | None = None, prompt_name: str | None = None,
                        prompt: str | None = None, packing: bool = False, pack_length: int = 512):
        """Document vectors [n, V] float32 (CSR, or ``np.ndarray`` with ``dense=True``).

        ``packing=True`` packs documents of at most ``pack_length`` tokens several to a row (segment ids,
        per-document positions and pooling; same vectors as the padded path up to float rounding)."""
        texts = self._with_prompt(validate_texts(texts, "texts"), "document", prompt_name, prompt)
        _check_batch_size(batch_size)
        k = check_max_active_dims(max_active_dims) or self.max_active_dims
        ids, n_truncated = self.document_tokenizer.encode_documents(texts, self.max_seq_length)
        if n_truncated:
            logger.warning("%d of %d documents were longer than max_seq_length=%d tokens and were truncated",
                           n_truncated, len(texts), self.max_seq_length)
        if packing:
            rows = self._encode_document_ids_packed(ids, batch_size, k, show_progress_bar, pack_length)
        else:
            rows = self._encode_document_ids(ids, batch_size, k, show_progress_bar)
        return rows.toarray() if dense else rows

    def encode(self, texts: Sequence[str], **kwargs):
        """Plain ``encode`` follows the Router's default route, which is ``document``."""
        return self.encode_document(texts, **kwargs)

    def _encode_document_ids(self, ids: list[np.ndarray], batch_size: int, k: int | None,
                             show_progress_bar: bool | None) -> sp.csr_matrix:
        n = len(ids)
        if n == 0:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(-lengths, kind="stable")
        graphdef, state = nnx.split(self.model)
        batches = []
        start = 0
        while start < n:
            pad_len = padded_length(int(lengths[order[start]]), self.max_seq_length, ENCODE_LENGTH_LADDER)
            size = max(1, min(batch_size, self.tokens_per_batch // pad_len))
            batches.append((order[start:start + size], pad_len))
            start += size
        pieces: list[sp.csr_matrix] = [None] * len(batches)  # type: ignore[list-item]
        progress = _progress(len(batches), show_progress_bar, n >= _AUTO_PROGRESS, "Encoding documents")
        for b, (rows, pad_len) in enumerate(batches):
            padded_rows = pow2_at_least(len(rows))
            ids_BxL = np.zeros((padded_rows, pad_len), np.int32)
            mask_BxL = np.zeros((padded_rows, pad_len), np.int32)
            for i, r in enumerate(rows):
                ids_BxL[i, :lengths[r]] = ids[r]
                mask_BxL[i, :lengths[r]] = 1
            if padded_rows > len(rows):
                mask_BxL[len(rows):, 0] = 1  # filler rows: one token, discarded below
            pooled = np.asarray(self._doc_fn(graphdef, state, ids_BxL, mask_BxL))[: len(rows)]
            pieces[b] = dense_to_csr(topk_dense_rows(pooled, k))
            if progress is not None:
                progress.update(1)
        if progress is not None:
            progress.close()
        stacked = sp.vstack(pieces, format="csr", dtype=np.float32)
        inverse = np.empty(n, np.int64)
        inverse[order] = np.arange(n)
        return stacked[inverse]

    def _encode_document_ids_packed(self, ids: list[np.ndarray], batch_size: int, k: int | None,
                                    show_progress_bar: bool | None, pack_length: int) -> sp.csr_matrix:
        from jsplade.splade.packing import pack_documents

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
        rows_per_call = max(1, min(batch_size, self.tokens_per_batch // pack_length))
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
                pooled = self._packed_fn(graphdef, state, *arrays, groups)
                pooled_rows.append(np.asarray(pooled)[:real])
            pooled_all = np.concatenate(pooled_rows, axis=0)  # [R, G, V]
            vectors = pooled_all[packed.doc_slot[:, 0], packed.doc_slot[:, 1]]
            csr = dense_to_csr(topk_dense_rows(vectors, k))
            for j, i in enumerate(order):
                out[i] = csr[j]
        return sp.vstack(out, format="csr", dtype=np.float32)

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
        return (f"SparseEncoder(vocab={self.vocab_size}, layers={cfg.num_hidden_layers}, hidden={cfg.hidden_size}, "
                f"max_seq_length={self.max_seq_length}, pooling={self.model.pooling_strategy}/"
                f"{self.model.activation}, source={self.source})")


def _pool_documents(graphdef, state, ids_BxL, mask_BxL):
    model = nnx.merge(graphdef, state)
    return model.encode_documents(ids_BxL, mask_BxL)


def _pool_packed(graphdef, state, ids, mask, positions, segments, groups, n_groups):
    model = nnx.merge(graphdef, state)
    return model.encode_packed(ids, mask, positions, segments, groups, n_groups)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _progress(total: int, show: bool | None, auto: bool, desc: str):
    if show is False or (show is None and not auto):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch")


def _check_sizes(config_vocab: int, config_path: Path, tokenizer_vocab: int, tokenizer_dir: Path,
                 weight_len: int, query_spec) -> None:
    if config_vocab == tokenizer_vocab == weight_len:
        return
    weight_file = query_spec.weight_file or query_spec.json_weights_file
    raise ValueError(
        "vocabulary sizes disagree: "
        f"{config_path} vocab_size={config_vocab}, tokenizer in {tokenizer_dir} has {tokenizer_vocab} tokens, "
        f"static query weight {weight_file} has {weight_len} entries; all three must be equal")
