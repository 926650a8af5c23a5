"""Writing a jsplade ``SparseEncoder`` (or a bare GTE MLM) as a directory the PyTorch tools load.

Two layouts (sparse_encoder_format.md §2.1), both in the sentence-transformers **5.x dialect** (5.x type
strings and config keys, all four tokenizer files), which ST 5.x and 6.x both read:

* ``layout="st"``: what ``SparseEncoder.save`` writes — the transformer in ``document_0_MLMTransformer/``
  with its ``sentence_bert_config.json``.
* ``layout="opensearch"``: the OpenSearch hub layout — the transformer's files in the root (Router key
  ``""``), plus ``idf.json`` and ``query_token_weights.txt`` regenerated from the current static weights.

A symmetric model (queries through the same MLM) has one layout, the one ``SparseEncoder.save`` writes for
it: ``modules.json`` = [MLMTransformer in the root, SpladePooling in ``1_SpladePooling/``], no Router. An
asymmetric model (an MLM on each route) is a Router with ``query_0_MLMTransformer/``,
``query_1_SpladePooling/``, ``document_0_MLMTransformer/`` and ``document_1_SpladePooling/`` (layout "st").

Weight names: ``naming="new"`` writes new-impl's ``NewForMaskedLM`` config (``model_type`` new + the
original ``auto_map``; ST then needs ``trust_remote_code=True``); ``naming="gte"`` writes transformers'
native ``GteForMaskedLM`` config and names, which ST loads without remote code. The tied decoder weight
is never stored. Everything is prepared in memory and checked first, then written into a temporary sibling
directory that is renamed onto ``dst`` only when complete (``jsplade.files.atomic_directory``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jsplade.backbones.params import flat_params
from jsplade.backbones.protocol import BackboneConfig, MaskedLM
from jsplade.backbones.registry import backbone_of
from jsplade.backbones.tokenizer import WordPieceTokenizer
from jsplade.checkpoints.hf_folder import save_mlm
from jsplade.checkpoints.parts import EncoderParts
from jsplade.checkpoints.safetensors_io import write_safetensors
from jsplade.files import atomic_directory, atomic_write_text

LAYOUTS = ("st", "opensearch")
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # transformers' default shard size (5 GB): v3-gte stays one file

# Sub-folders / module ids of the Router (module id == sub-folder name; "" is the Router's own folder).
QUERY_MODULE = "query_0_SparseStaticEmbedding"
ST_DOCUMENT_MODULE = "document_0_MLMTransformer"
POOLING_MODULE = "document_1_SpladePooling"
SYMMETRIC_POOLING_MODULE = "1_SpladePooling"  # a symmetric model's pooling (its transformer is in the root)
QUERY_MLM_MODULE = "query_0_MLMTransformer"  # an asymmetric model's query route
QUERY_POOLING_MODULE = "query_1_SpladePooling"

# sentence-transformers 5.x type strings (module file + class); jsplade.checkpoints.st_format reads them as dialect "st5".
ROUTER_TYPE = "sentence_transformers.models.Router"
STATIC_TYPE = "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding.SparseStaticEmbedding"
MLM_TYPE = "sentence_transformers.sparse_encoder.models.MLMTransformer.MLMTransformer"
POOLING_TYPE = "sentence_transformers.sparse_encoder.models.SpladePooling.SpladePooling"

# ``__version__`` of config_sentence_transformers.json: the versions whose file format this writer
# reproduces (the 5.x dialect), so that any ST >= 5.1.2 loads the folder without a version warning.
DIALECT_VERSIONS = {"sentence_transformers": "5.1.2", "transformers": "4.57.6", "pytorch": "2.13.0+cpu"}

IDF_FILE = "idf.json"
QUERY_TOKEN_WEIGHTS_FILE = "query_token_weights.txt"

Progress = Callable[[int, int], None]  # (bytes of weights written so far, total bytes of weights)


@dataclass(frozen=True)
class ExportSummary:
    """What a conversion wrote: the directory, a one-line description, every file with its size
    (relative path, bytes; sorted), the number of stored tensors and of parameters (the tied decoder
    weight counted once, the static query weight included)."""

    path: Path
    description: str
    files: tuple[tuple[str, int], ...]
    n_tensors: int
    n_parameters: int

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def format(self) -> str:
        """A human-readable report: header line, one line per file, totals."""
        width = max((len(name) for name, _ in self.files), default=4)
        lines = [f"wrote {self.path}: {self.description}"]
        lines += [f"  {name:<{width}}  {_human_bytes(size):>10}" for name, size in self.files]
        lines.append(f"  {len(self.files)} files, {_human_bytes(self.total_bytes)}; "
                     f"{self.n_tensors} tensors, {self.n_parameters:,} parameters")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- public API
def write_sparse_encoder(parts: EncoderParts, dst: str | Path, *, layout: str = "st", naming: str | None = None,
                         overwrite: bool = False, max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES,
                         model_card_metrics: Mapping[str, Any] | None = None,
                         progress: Progress | None = None) -> ExportSummary:
    """Write a sparse encoder's ``parts`` to ``dst`` as a sentence-transformers directory
    (``SparseEncoder.save`` and ``jsplade.export_sparse_encoder`` call this).

    ``layout`` "st" | "opensearch", ``naming`` one of the backbone's weight namings (default: its canonical
    one; GTE: "new" | "gte", module docstring). ``max_shard_bytes``: larger document weights are split into
    ``model-0000i-of-0000n.safetensors`` + index (``None`` = never). ``model_card_metrics``: {name: value}
    shown as a table in README.md. ``progress(done, total)`` is called with the bytes of weights written.
    An existing ``dst`` is refused unless ``overwrite``; every check (arguments, vocabulary sizes, whether
    the config can be written in ``naming``) runs before anything is written. Returns an ``ExportSummary``.
    """
    if not isinstance(parts, EncoderParts):
        raise TypeError(f"parts must be jsplade EncoderParts, got {type(parts).__name__}")
    dst = _check_dst(dst)
    check_choice(layout, LAYOUTS, "layout")
    mlm = parts.mlm
    family = backbone_of(mlm)
    naming = family.check_naming(naming, mlm.config)
    max_shard_bytes = _check_shard_bytes(max_shard_bytes)
    metrics = _check_metrics(model_card_metrics)
    _check_progress(progress)
    check_overwrite(overwrite)
    refuse_existing(dst, overwrite)

    config = mlm.config
    if parts.query_weights is None:
        if layout != "st":
            raise ValueError(f"layout {layout!r} holds static query weights (idf.json); "
                             f"{'an' if parts.shape == 'asymmetric' else 'a'} {parts.shape} model is written in the "
                             "sentence-transformers layout (layout='st')")
        if parts.query_mlm is not None:
            return _write_asymmetric(parts, dst, naming, overwrite, max_shard_bytes, metrics, progress)
        return _write_symmetric(parts, dst, naming, overwrite, max_shard_bytes, metrics, progress)
    weight_V = np.ascontiguousarray(np.asarray(parts.query_weights, dtype=np.float32))
    _check_vocab(config, weight_V, parts.document_tokenizer, parts.query_tokenizer)
    config.to_hf_dict(naming)  # raises ConfigError now if the naming cannot express this config
    tokens = _tokens_by_id(parts.query_tokenizer, weight_V.shape[0]) if layout == "opensearch" else None

    vocab = config.vocab_size
    doc_module = "" if layout == "opensearch" else ST_DOCUMENT_MODULE
    texts: dict[str, str] = {
        "modules.json": _json([{"idx": 0, "name": "0", "path": "", "type": ROUTER_TYPE}], 2),
        "config_sentence_transformers.json": _json(_st_config(parts), 2),
        "router_config.json": _json(_router_config(doc_module), 4),
        f"{QUERY_MODULE}/config.json": _json({"frozen": False}, 4),
        f"{POOLING_MODULE}/config.json": _pooling_json(parts.pooling_strategy, parts.activation, vocab),
    }
    sbert = _sbert_json(parts.max_seq_length)
    if layout == "st":
        texts[f"{ST_DOCUMENT_MODULE}/sentence_bert_config.json"] = sbert
    else:
        if parts.max_seq_length != _implied_max_length(config, parts.document_tokenizer):
            # The hub layout has no sentence_bert_config.json; keep a non-default length explicit.
            texts["sentence_bert_config.json"] = sbert
        texts[IDF_FILE] = json.dumps({t: float(w) for t, w in zip(tokens, weight_V)}, ensure_ascii=False)
        texts[QUERY_TOKEN_WEIGHTS_FILE] = "".join(f"{t}\t{float(w)}\n" for t, w in zip(tokens, weight_V))
    n_doc_params = _n_params(mlm)
    n_tensors = family.n_tensors(config, naming) + 1
    texts["README.md"] = _model_card(parts, dst.name, layout, naming, n_doc_params, metrics)
    files = _write_tree(dst, overwrite, progress, max_shard_bytes, texts,
                        mlms=[(mlm, doc_module, naming)],
                        tokenizers=[(parts.document_tokenizer, doc_module), (parts.query_tokenizer, QUERY_MODULE)],
                        tensors={f"{QUERY_MODULE}/model.safetensors": {"weight": weight_V}})
    where = "transformer in the root (OpenSearch hub layout)" if layout == "opensearch" else \
        f"transformer in {ST_DOCUMENT_MODULE}/ (sentence-transformers layout)"
    return ExportSummary(dst, f"sentence-transformers SparseEncoder, {where}, {family.namings[naming]} weights",
                         files, n_tensors, n_doc_params + vocab)


def _write_symmetric(parts: EncoderParts, dst: Path, naming: str, overwrite: bool, max_shard_bytes: int | None,
                     metrics: Mapping[str, Any], progress: Progress | None) -> ExportSummary:
    """A symmetric SPLADE directory: [MLMTransformer (root), SpladePooling (1_SpladePooling/)]."""
    mlm, config = parts.mlm, parts.mlm.config
    family = backbone_of(mlm)
    _check_equal_sizes({"config vocab_size": config.vocab_size,
                        "document tokenizer": parts.document_tokenizer.vocab_size,
                        "query tokenizer": parts.query_tokenizer.vocab_size})
    config.to_hf_dict(naming)  # raises ConfigError now if the naming cannot express this config
    n_doc_params = _n_params(mlm)
    texts = {
        "modules.json": _json([{"idx": 0, "name": "0", "path": "", "type": MLM_TYPE},
                               {"idx": 1, "name": "1", "path": SYMMETRIC_POOLING_MODULE, "type": POOLING_TYPE}], 2),
        "config_sentence_transformers.json": _json(_st_config(parts), 2),
        "sentence_bert_config.json": _sbert_json(parts.max_seq_length),
        f"{SYMMETRIC_POOLING_MODULE}/config.json": _pooling_json(parts.pooling_strategy, parts.activation,
                                                                 config.vocab_size),
        "README.md": _model_card(parts, dst.name, "st", naming, n_doc_params, metrics),
    }
    files = _write_tree(dst, overwrite, progress, max_shard_bytes, texts, mlms=[(mlm, "", naming)],
                        tokenizers=[(parts.document_tokenizer, "")])
    return ExportSummary(dst, f"sentence-transformers SparseEncoder, symmetric (one MLM for queries and "
                              f"documents), {family.namings[naming]} weights", files,
                         family.n_tensors(config, naming), n_doc_params)


def _write_asymmetric(parts: EncoderParts, dst: Path, naming: str, overwrite: bool, max_shard_bytes: int | None,
                      metrics: Mapping[str, Any], progress: Progress | None) -> ExportSummary:
    """An asymmetric SPLADE directory: a Router with [MLMTransformer, SpladePooling] on each route."""
    mlm, query_mlm = parts.mlm, parts.query_mlm
    family, query_family = backbone_of(mlm), backbone_of(query_mlm)
    # ``naming`` applies to the query model where its family and config allow it, else that model's default.
    try:
        query_naming = query_family.check_naming(naming, query_mlm.config)
    except ValueError:
        query_naming = query_family.check_naming(None, query_mlm.config)
    _check_equal_sizes({"document config vocab_size": mlm.config.vocab_size,
                        "query config vocab_size": query_mlm.config.vocab_size,
                        "document tokenizer": parts.document_tokenizer.vocab_size,
                        "query tokenizer": parts.query_tokenizer.vocab_size})
    mlm.config.to_hf_dict(naming)  # raises ConfigError now if a naming cannot express its config
    query_mlm.config.to_hf_dict(query_naming)
    q_strategy, q_activation = parts.query_pooling
    n_doc, n_query = _n_params(mlm), _n_params(query_mlm)
    vocab = mlm.config.vocab_size
    texts = {
        "modules.json": _json([{"idx": 0, "name": "0", "path": "", "type": ROUTER_TYPE}], 2),
        "config_sentence_transformers.json": _json(_st_config(parts), 2),
        "router_config.json": _json(_router_config(ST_DOCUMENT_MODULE, {QUERY_MLM_MODULE: MLM_TYPE,
                                                                         QUERY_POOLING_MODULE: POOLING_TYPE}), 4),
        f"{QUERY_MLM_MODULE}/sentence_bert_config.json": _sbert_json(parts.query_max_seq_length or parts.max_seq_length),
        f"{QUERY_POOLING_MODULE}/config.json": _pooling_json(q_strategy, q_activation, vocab),
        f"{ST_DOCUMENT_MODULE}/sentence_bert_config.json": _sbert_json(parts.max_seq_length),
        f"{POOLING_MODULE}/config.json": _pooling_json(parts.pooling_strategy, parts.activation, vocab),
        "README.md": _model_card(parts, dst.name, "st", naming, n_doc, metrics, n_query),
    }
    files = _write_tree(dst, overwrite, progress, max_shard_bytes, texts,
                        mlms=[(query_mlm, QUERY_MLM_MODULE, query_naming), (mlm, ST_DOCUMENT_MODULE, naming)],
                        tokenizers=[(parts.query_tokenizer, QUERY_MLM_MODULE),
                                    (parts.document_tokenizer, ST_DOCUMENT_MODULE)])
    return ExportSummary(dst, f"sentence-transformers SparseEncoder, asymmetric (a query and a document MLM), "
                              f"{family.namings[naming]} document weights", files,
                         family.n_tensors(mlm.config, naming) + query_family.n_tensors(query_mlm.config, query_naming),
                         n_doc + n_query)


def export_mlm(mlm: MaskedLM, dst: str | Path, naming: str | None = None,
               tokenizer: WordPieceTokenizer | None = None, *, overwrite: bool = False,
               max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES, progress: Progress | None = None) -> ExportSummary:
    """Write a bare backbone model (e.g. ``GteForMaskedLM``) as a Hugging Face model folder (``config.json`` +
    safetensors, and the tokenizer files when ``tokenizer`` is given), atomically, like ``write_sparse_encoder``."""
    try:
        family = backbone_of(mlm)
    except TypeError:
        raise TypeError(f"mlm must be a jsplade backbone model (e.g. GteForMaskedLM), got {type(mlm).__name__}") from None
    if tokenizer is not None and not isinstance(tokenizer, WordPieceTokenizer):
        raise TypeError(f"tokenizer must be a jsplade WordPieceTokenizer or None, got {type(tokenizer).__name__}")
    dst = _check_dst(dst)
    naming = family.check_naming(naming, mlm.config)
    max_shard_bytes = _check_shard_bytes(max_shard_bytes)
    _check_progress(progress)
    check_overwrite(overwrite)
    refuse_existing(dst, overwrite)
    config = mlm.config
    if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"vocabulary sizes disagree: the model's vocab_size is {config.vocab_size}, "
                         f"the tokenizer has {tokenizer.vocab_size} tokens")
    config.to_hf_dict(naming)
    files = _write_tree(dst, overwrite, progress, max_shard_bytes, {}, mlms=[(mlm, "", naming)],
                        tokenizers=[] if tokenizer is None else [(tokenizer, "")])
    return ExportSummary(dst, f"Hugging Face masked-LM folder, {family.namings[naming]} weights", files,
                         family.n_tensors(config, naming), _n_params(mlm))


def _n_params(mlm: MaskedLM) -> int:
    return sum(int(np.prod(v.shape)) for v in flat_params(mlm).values())


def _write_tree(dst: Path, overwrite: bool, progress: Progress | None, max_shard_bytes: int | None,
                texts: Mapping[str, str], *, mlms: Sequence[tuple[MaskedLM, str, str]],
                tokenizers: Sequence[tuple[WordPieceTokenizer, str]],
                tensors: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> tuple[tuple[str, int], ...]:
    """Write one export atomically onto ``dst``: each (model, folder, naming) of ``mlms`` (weights + config),
    each (tokenizer, folder), each safetensors file of ``tensors`` and each text file, at paths relative to
    ``dst`` ("" = the root). ``progress`` counts the bytes of every weight written. Returns the file list."""
    tensors = tensors or {}
    total = 4 * sum(_n_params(m) for m, _, _ in mlms) + sum(a.nbytes for f in tensors.values() for a in f.values())
    counter = _ByteCounter(progress, total)
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        for mlm, folder, naming in mlms:
            save_mlm(mlm, tmp / folder, naming, max_shard_bytes=max_shard_bytes, progress=counter)
        for tokenizer, folder in tokenizers:
            tokenizer.save(tmp / folder)
        for rel, named in tensors.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            write_safetensors(tmp / rel, dict(named), progress=counter)
        for rel, text in texts.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(tmp / rel, text)
        return _list_files(tmp)


def list_files(folder: str | Path) -> tuple[tuple[str, int], ...]:
    """(relative path, size in bytes) of every file under ``folder``, sorted by path."""
    return _list_files(Path(folder))


# ----------------------------------------------------------------------------- checks


def _check_dst(dst: Any) -> Path:
    if not isinstance(dst, (str, Path)) or str(dst) == "":
        raise TypeError(f"dst must be a non-empty str or Path, got {dst!r}")
    return Path(dst)


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    """ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_shard_bytes(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"max_shard_bytes must be a positive integer or None, got {value!r}")
    return int(value)


def _check_progress(progress: Any) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable(done_bytes, total_bytes) or None, got {type(progress).__name__}")


def _check_metrics(metrics: Any) -> dict[str, Any]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"model_card_metrics must be a mapping of name -> value, got {type(metrics).__name__}")
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"model_card_metrics keys must be strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
            raise TypeError(f"model_card_metrics[{key!r}] must be a number or a string, got {type(value).__name__}")
    return dict(metrics)


def check_overwrite(overwrite: Any) -> None:
    """TypeError unless ``overwrite`` is a bool."""
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")


def refuse_existing(dst: Path, overwrite: bool, src: Path | None = None) -> None:
    """Fail before anything is read or written: an existing ``dst`` without ``overwrite``, an existing ``dst``
    that is not a directory, or ``dst`` being the source directory ``src``."""
    if src is not None and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the destination is the source directory; choose another destination")
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{dst}: destination exists (pass overwrite=True / --overwrite to replace it)")
        if not dst.is_dir():
            raise FileExistsError(f"{dst}: destination exists and is not a directory; refusing to replace it")


def _check_vocab(config: BackboneConfig, weight_V: np.ndarray, doc_tok: WordPieceTokenizer,
                 query_tok: WordPieceTokenizer) -> None:
    _check_equal_sizes({"config vocab_size": config.vocab_size, "static query weight": int(weight_V.shape[0]),
                        "document tokenizer": doc_tok.vocab_size, "query tokenizer": query_tok.vocab_size})
    if weight_V.ndim != 1 or not np.all(np.isfinite(weight_V)):
        raise ValueError("the static query weight must be a finite 1-D vector")


def _tokens_by_id(tokenizer: WordPieceTokenizer, size: int) -> list[str]:
    tokens = [tokenizer.id_to_token(i) for i in range(size)]
    missing = [i for i, t in enumerate(tokens) if t is None]
    if missing:
        raise ValueError(f"the query tokenizer has no token for ids {missing[:5]}; idf.json needs ids 0..{size - 1}")
    return tokens  # type: ignore[return-value]


def _implied_max_length(config: BackboneConfig, tokenizer: WordPieceTokenizer) -> int:
    """Document length ST uses without sentence_bert_config.json (min of model and tokenizer limits)."""
    known = [config.max_position_embeddings]
    if tokenizer.model_max_length is not None:
        known.append(tokenizer.model_max_length)
    return min(known)


# ----------------------------------------------------------------------------- file contents
def _json(obj: Any, indent: int) -> str:
    """JSON as sentence-transformers writes it (``json.dump`` with an indent, ASCII, no final newline)."""
    return json.dumps(obj, indent=indent)


def _st_config(parts: EncoderParts) -> dict[str, Any]:
    prompts = dict(parts.prompts) if parts.prompts else {"query": "", "document": ""}
    out: dict[str, Any] = {"model_type": "SparseEncoder", "__version__": dict(DIALECT_VERSIONS),
                           "prompts": prompts, "default_prompt_name": parts.default_prompt_name,
                           "similarity_fn_name": parts.similarity_fn_name}
    if parts.max_active_dims is not None:
        out["max_active_dims"] = int(parts.max_active_dims)  # read by ST 6.x; ignored by 5.x
    return out


def _check_equal_sizes(sizes: Mapping[str, int]) -> None:
    """A ValueError listing every vocabulary size unless they are all equal."""
    if len(set(sizes.values())) != 1:
        raise ValueError("vocabulary sizes disagree: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                         + "; all must be equal")


def _pooling_json(strategy: str, activation: str, vocab: int) -> str:
    return _json({"pooling_strategy": strategy, "activation_function": activation,
                  "word_embedding_dimension": vocab}, 4)


def _sbert_json(max_seq_length: int) -> str:
    return _json({"max_seq_length": int(max_seq_length), "do_lower_case": False}, 4)


def _router_config(doc_module: str, query_types: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Router config: ``query_types`` = the query route's module ids → types, in route order (default:
    the static query weights), then the document route [``doc_module``, its SpladePooling]."""
    query_types = dict(query_types or {QUERY_MODULE: STATIC_TYPE})
    return {
        "types": {**query_types, doc_module: MLM_TYPE, POOLING_MODULE: POOLING_TYPE},
        "structure": {"query": list(query_types), "document": [doc_module, POOLING_MODULE]},
        "parameters": {"default_route": "document", "allow_empty_key": True},
    }


def _model_card(parts: EncoderParts, name: str, layout: str, naming: str, n_doc_params: int,
                metrics: Mapping[str, Any], n_query_params: int = 0) -> str:
    cfg = parts.mlm.config
    family = backbone_of(cfg)
    vocab = cfg.vocab_size
    remote = naming in family.remote_code_namings
    native = next((n for n in family.namings if n not in family.remote_code_namings), None)
    load_args = '"path/to/this/folder", trust_remote_code=True' if remote else '"path/to/this/folder"'
    symmetric = parts.query_weights is None and parts.query_mlm is None
    asymmetric = parts.query_mlm is not None
    query_family = backbone_of(parts.query_mlm) if asymmetric else None
    q_strategy, q_activation = parts.query_pooling
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: feature-extraction",
        "tags:",
        "- sentence-transformers",
        "- sparse-encoder",
        "- sparse",
        "- splade",
        *(["- symmetric"] if symmetric else ["- asymmetric"] if asymmetric else ["- asymmetric", "- inference-free"]),
        "- jsplade",
        "---",
        "",
        f"# {name}",
        "",
        ("A learned sparse retrieval model (symmetric SPLADE: queries and documents through the same model), "
         if symmetric else
         "A learned sparse retrieval model (asymmetric SPLADE: queries and documents through separate models), "
         if asymmetric else
         "A learned sparse retrieval model of the inference-free kind (OpenSearch neural sparse style), ")
        + "saved by jsplade in the sentence-transformers `SparseEncoder` format.",
        "",
        f"* **Documents** run through a {family.display_name} masked-language model; its vocabulary logits are "
        f"pooled over the tokens ({parts.pooling_strategy} pooling, activation `{parts.activation}`) into one "
        f"{vocab}-dimensional sparse vector per document, one dimension per WordPiece token.",
        ("* **Queries** run through the same model and pooling as documents." if symmetric else
         f"* **Queries** run through their own {query_family.display_name} masked-language model "
         f"({q_strategy} pooling, activation `{q_activation}`)." if asymmetric else
         "* **Queries** need no model: every distinct query token contributes its own learned weight "
         "(a static per-token weight vector), so encoding a query is a table lookup."),
        f"* **Score** = `{parts.similarity_fn_name}` product of the query and document vectors.",
        "",
        "## Architecture",
        "",
        "| part | value |",
        "|---|---|",
        *(f"| {part} | {value} |" for part, value in cfg.describe()),
        f"| max document length | {parts.max_seq_length} tokens |",
        f"| vocabulary / output dimension | {vocab} |",
        f"| parameters | {n_doc_params:,} in the {'' if symmetric else 'document '}model"
        + (f" + {n_query_params:,} in the query model (decoders" if asymmetric else " (decoder")
        + " tied to the word embeddings)"
        + ("" if symmetric or asymmetric else f" + {vocab:,} static query weights") + " |",
        f"| weight names | {family.naming_cards[naming]} |",
        "| layout | " + ("transformer in the root, pooling in `1_SpladePooling/`" if symmetric else
                         f"Router: query model in `{QUERY_MLM_MODULE}/`, document model in `{ST_DOCUMENT_MODULE}/`"
                         if asymmetric else
                         "OpenSearch hub layout (transformer files in the root)" if layout == "opensearch"
                         else "sentence-transformers layout (transformer in `document_0_MLMTransformer/`)") + " |",
        "",
    ]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for key, value in metrics.items():
            shown = f"{float(value):.6g}" if isinstance(value, (float, np.floating)) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    lines += [
        "## Usage",
        "",
        "With sentence-transformers (5.x or 6.x):",
        "",
        "```python",
        "from sentence_transformers import SparseEncoder",
        "",
        f"model = SparseEncoder({load_args})",
        'queries = model.encode_query(["what is a sparse retriever?"])',
        'documents = model.encode_document(["Sparse retrievers score documents by weighted token overlap."])',
        "print(model.similarity(queries, documents))",
        "```",
        "",
    ]
    if remote:
        lines += [f"`trust_remote_code=True` is needed because the config names the remote {family.display_name} code"
                  + (f"; `jsplade-convert to-hf --naming {native}` writes a folder that transformers loads natively."
                     if native else "."), ""]
    lines += [
        "With jsplade (JAX):",
        "",
        "```python",
        "from jsplade import SparseEncoder",
        "",
        'encoder = SparseEncoder.from_pretrained("path/to/this/folder")',
        'q = encoder.encode_query(["what is a sparse retriever?"])',
        'd = encoder.encode_document(["Sparse retrievers score documents by weighted token overlap."])',
        "print(encoder.similarity(q, d))",
        "```",
        "",
    ]
    if layout == "opensearch":
        lines += [f"`{IDF_FILE}` and `{QUERY_TOKEN_WEIGHTS_FILE}` were regenerated from the static query weights "
                  f"stored in `{QUERY_MODULE}/model.safetensors`, so OpenSearch-side consumers see the same values.",
                  ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers
class _ByteCounter:
    """Turns per-write byte counts into ``progress(done, total)`` calls."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, int(total), 0

    def __call__(self, nbytes: int) -> None:
        self.done += int(nbytes)
        if self.progress is not None:
            self.progress(self.done, self.total)


def _list_files(folder: Path) -> tuple[tuple[str, int], ...]:
    out = []
    for root, _, names in os.walk(folder):
        for n in names:
            p = Path(root) / n
            out.append((p.relative_to(folder).as_posix(), p.stat().st_size))
    return tuple(sorted(out))


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover
