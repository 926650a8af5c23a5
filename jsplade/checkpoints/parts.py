"""A sparse encoder as plain parts, read from its directories: what the SPLADE side builds a ``SparseEncoder``
from and what the writers (``st_export``, the converters, the trainer's checkpoints) write.

``EncoderParts`` holds the document backbone (a ``jsplade.backbones`` model), the query side (static
weights for an inference-free model; a second backbone with its own pooling and length for an asymmetric
one; neither for a symmetric model, whose queries go through the document backbone), the pooling
settings, both tokenizers and the encoder settings (length, prompts, similarity, active dims).

* ``read_sparse_encoder(path_or_hub_id)``: a sentence-transformers ``SparseEncoder`` directory (either
  layout, either dialect; ``st_format``) or a hub id.
* ``read_checkpoint(run_dir, step)``: a jsplade checkpoint directory (``orbax_dir``): the meta JSON, the
  tokenizers of ``template/`` and the parameters of an orbax step (default: the latest).

Every problem raises ``ValueError`` / ``FileNotFoundError`` naming the file; only JSON, text and
safetensors are read, never pickle or code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.params import build_with_params, flat_params
from jsplade.backbones.protocol import ConfigError, MaskedLM
from jsplade.backbones.registry import backbone_of, config_from_hf_dict
from jsplade.backbones.tokenizer import WordPieceTokenizer, document_max_length
from jsplade.checkpoints.hf_folder import load_mlm
from jsplade.checkpoints.orbax_dir import (META_FILE, STEPS_DIR, TEMPLATE_DIR, CheckpointSteps, read_meta,
                                           to_numpy_flat)
from jsplade.checkpoints.st_format import (ACTIVATIONS, POOLING_STRATEGIES, SHAPES, read_query_weights,
                                           read_sparse_encoder_dir, resolve_model_path)

QUERY_PARAM = "query.weight"
MLM_PREFIX = "mlm."
QUERY_MLM_PREFIX = "query_mlm."


@dataclass
class EncoderParts:
    """Everything a SparseEncoder is made of. ``source`` is the directory the parts came from (its
    non-weight files are a checkpoint's ``template/``), or None."""

    mlm: MaskedLM
    query_weights: np.ndarray | None  # [V] float32 (inference-free); None: symmetric, queries through ``mlm``
    document_tokenizer: WordPieceTokenizer
    query_tokenizer: WordPieceTokenizer
    pooling_strategy: str
    activation: str
    max_seq_length: int
    similarity_fn_name: str = "dot"
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_active_dims: int | None = None
    source: Path | None = None
    # The asymmetric shape (a Router with an MLM on both routes): the query route's backbone, pooling, length.
    query_mlm: MaskedLM | None = None
    query_pooling_strategy: str | None = None  # None: the document pooling
    query_activation: str | None = None
    query_max_seq_length: int | None = None    # None: max_seq_length

    def __post_init__(self):
        if self.query_mlm is not None and self.query_weights is not None:
            raise ValueError("EncoderParts: give static query weights or a query MLM, not both")
        if self.query_mlm is None and (self.query_pooling_strategy, self.query_activation,
                                       self.query_max_seq_length) != (None, None, None):
            raise ValueError("EncoderParts: query pooling and length settings apply only with a query MLM")

    @property
    def shape(self) -> str:
        """"inference_free" (static query weights), "symmetric" (queries through the document MLM) or
        "asymmetric" (queries through their own MLM)."""
        if self.query_weights is not None:
            return "inference_free"
        return "symmetric" if self.query_mlm is None else "asymmetric"

    @property
    def query_pooling(self) -> tuple[str, str]:
        """(pooling strategy, activation) of the query route's MLM (symmetric: the document's)."""
        return (self.query_pooling_strategy or self.pooling_strategy, self.query_activation or self.activation)

    def flat_params(self) -> dict[str, np.ndarray]:
        """The checkpoint's flat parameters, float32 numpy: ``{"mlm.<path>": ..., "query.weight": ...}``
        (``query_mlm.<path>`` instead of ``query.weight`` for an asymmetric model, neither for a symmetric one)."""
        out = {MLM_PREFIX + k: v for k, v in to_numpy_flat(flat_params(self.mlm)).items()}
        if self.query_weights is not None:
            out[QUERY_PARAM] = np.asarray(self.query_weights, np.float32)
        if self.query_mlm is not None:
            out.update({QUERY_MLM_PREFIX + k: v for k, v in to_numpy_flat(flat_params(self.query_mlm)).items()})
        return out

    def checkpoint_meta(self) -> dict[str, Any]:
        """The meta JSON object of a jsplade checkpoint directory of these parts."""
        meta = {
            "config": self.mlm.config.to_hf_dict(),
            "pooling": {"pooling_strategy": self.pooling_strategy, "activation_function": self.activation},
            "max_seq_length": int(self.max_seq_length),
            "similarity_fn_name": self.similarity_fn_name,
            "prompts": dict(self.prompts),
            "default_prompt_name": self.default_prompt_name,
            "max_active_dims": self.max_active_dims,
            "source": str(self.source) if self.source is not None else None,
            "shape": self.shape,
        }
        if self.query_mlm is not None:
            strategy, activation = self.query_pooling
            meta.update({"query_config": self.query_mlm.config.to_hf_dict(),
                         "query_pooling": {"pooling_strategy": strategy, "activation_function": activation},
                         "query_max_seq_length": int(self.query_max_seq_length or self.max_seq_length)})
        return meta


# ----------------------------------------------------------------------------- sentence-transformers directories
def read_sparse_encoder(path_or_hub_id: str | Path, *, compute: ComputeOptions | None = None) -> EncoderParts:
    """The parts of a sentence-transformers SparseEncoder directory (ST-native or OpenSearch hub layout,
    5.x or 6.x dialect), or of a hub id fetched through huggingface_hub."""
    if not isinstance(path_or_hub_id, (str, Path)):
        raise TypeError(f"path_or_hub_id must be a str or Path, got {type(path_or_hub_id).__name__}")
    root = resolve_model_path(str(path_or_hub_id))
    spec = read_sparse_encoder_dir(root)
    doc_tok = WordPieceTokenizer.from_dir(spec.document.folder)
    mlm = load_mlm(spec.document.folder, compute=compute)
    asymmetric: dict[str, Any] = {}
    if spec.query_mlm is not None:  # asymmetric: the query route has its own MLM, pooling and length
        query_folder = spec.query_mlm.folder
        query_tok = WordPieceTokenizer.from_dir(query_folder)
        query_mlm = load_mlm(query_folder, compute=compute)
        _check_sizes(query_mlm.config.vocab_size, query_folder / "config.json", query_tok.vocab_size,
                     query_folder, None, None)
        asymmetric = {"query_mlm": query_mlm, "query_pooling_strategy": spec.query_pooling.pooling_strategy,
                      "query_activation": spec.query_pooling.activation_function,
                      "query_max_seq_length": document_max_length(spec.query_mlm.max_seq_length,
                                                                  query_mlm.config.max_position_embeddings,
                                                                  query_tok.model_max_length)}
        weights = None
    elif spec.query is None:  # symmetric: one MLM for both sides
        query_folder, query_tok, weights = spec.document.folder, doc_tok, None
    else:
        query_folder = spec.query.folder
        query_tok = _query_tokenizer(query_folder, doc_tok, spec.document.folder)
        weights = read_query_weights(spec.query, query_tok.get_vocab())
    _check_sizes(mlm.config.vocab_size, spec.document.folder / "config.json", doc_tok.vocab_size,
                 spec.document.folder, None if weights is None else len(weights), spec.query)
    check_same_vocabulary(query_tok, query_folder, doc_tok, spec.document.folder)
    max_len = document_max_length(spec.document.max_seq_length, mlm.config.max_position_embeddings,
                                  doc_tok.model_max_length)
    return EncoderParts(mlm, weights, doc_tok, query_tok, spec.pooling.pooling_strategy,
                        spec.pooling.activation_function, max_len, similarity_fn_name=spec.similarity_fn_name,
                        prompts=spec.prompts, default_prompt_name=spec.default_prompt_name,
                        max_active_dims=spec.max_active_dims, source=root, **asymmetric)


def check_same_vocabulary(query_tok: WordPieceTokenizer, query_folder: Path, doc_tok: WordPieceTokenizer,
                          doc_folder: Path) -> None:
    """A ValueError naming both folders unless the query and document tokenizers map every token to the
    same id: both routes' vectors index one vocabulary, so a query tokenizer of another vocabulary would
    score queries against the wrong document dimensions."""
    if query_tok is doc_tok:
        return
    q_vocab, d_vocab = query_tok.get_vocab(), doc_tok.get_vocab()
    if q_vocab == d_vocab:
        return
    differing = sorted((t for t in q_vocab.keys() | d_vocab.keys() if q_vocab.get(t) != d_vocab.get(t)),
                       key=lambda t: (min(q_vocab.get(t, 1 << 62), d_vocab.get(t, 1 << 62)), t))
    token = differing[0]
    raise ValueError(f"the query and document routes use different vocabularies: token {token!r} has id "
                     f"{q_vocab.get(token)} in the query tokenizer ({query_folder}) and {d_vocab.get(token)} in the "
                     f"document tokenizer ({doc_folder}) ({len(differing)} tokens differ); both routes must share one "
                     "vocabulary")


def _check_sizes(config_vocab: int, config_path: Path, tokenizer_vocab: int, tokenizer_dir: Path,
                 weight_len: int | None, query_spec) -> None:
    if config_vocab == tokenizer_vocab and weight_len in (None, config_vocab):
        return
    if weight_len is None:
        raise ValueError(f"vocabulary sizes disagree: {config_path} vocab_size={config_vocab}, tokenizer in "
                         f"{tokenizer_dir} has {tokenizer_vocab} tokens; they must be equal")
    weight_file = query_spec.weight_file or query_spec.json_weights_file or query_spec.txt_weights_file
    raise ValueError(
        "vocabulary sizes disagree: "
        f"{config_path} vocab_size={config_vocab}, tokenizer in {tokenizer_dir} has {tokenizer_vocab} tokens, "
        f"static query weight {weight_file} has {weight_len} entries; all three must be equal")


# ----------------------------------------------------------------------------- jsplade checkpoint directories
def read_checkpoint(run_dir: str | Path, step: int | None = None, *,
                    compute: ComputeOptions | None = None) -> EncoderParts:
    """The parts of a jsplade checkpoint directory: the model config, pooling and encoder settings from its
    meta JSON, the tokenizers from ``template/``, the parameters of orbax step ``step`` (default: the latest).
    ``source`` is the template directory.

    Raises ``ValueError`` / ``FileNotFoundError`` naming the file for: not a checkpoint directory, a bad meta
    file or unsupported config option, a missing template or tokenizer, no such step, parameters missing or
    unexpected, a vocabulary mismatch (config vs tokenizers vs static weight), shapes that do not fit the config.
    """
    run_dir = Path(check_path_arg(run_dir, "run_dir"))
    step = check_step(step)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a directory (expected a jsplade checkpoint directory)")
    meta_path = run_dir / META_FILE
    meta = read_meta(run_dir)
    config = _meta_config(meta, meta_path)
    strategy, activation = _meta_pooling(meta, meta_path)
    settings = _meta_settings(meta, meta_path)

    template = run_dir / TEMPLATE_DIR
    doc_folder, query_folder = template_folders(template)
    doc_tok = WordPieceTokenizer.from_dir(doc_folder)
    query_tok = _query_tokenizer(query_folder, doc_tok, doc_folder)

    shape = _meta_shape(meta, meta_path)
    asymmetric = _meta_query_mlm(meta, meta_path) if shape == "asymmetric" else {}
    params, step_dir = _restore_params(run_dir, step, shape)
    weight = params.get(QUERY_PARAM)
    if weight is not None and weight.ndim != 1:
        raise ValueError(f"{step_dir}: parameter '{QUERY_PARAM}' must be 1-D [vocab], got shape {list(weight.shape)}")
    sizes = {f"{meta_path.name} config vocab_size": config.vocab_size,
             f"document tokenizer ({doc_folder})": doc_tok.vocab_size,
             f"query tokenizer ({query_folder})": query_tok.vocab_size}
    if weight is not None:
        sizes[f"static weight '{QUERY_PARAM}' in {step_dir}"] = int(weight.shape[0])
    if asymmetric:
        sizes[f"{meta_path.name} query_config vocab_size"] = asymmetric["query_mlm"].vocab_size
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{run_dir}: vocabulary sizes disagree: "
                         + ", ".join(f"{k} = {v}" for k, v in sizes.items()) + "; all must be equal")
    check_same_vocabulary(query_tok, query_folder, doc_tok, doc_folder)
    mlm = _build_mlm(config, params, MLM_PREFIX, compute, step_dir, meta_path, "config")
    if asymmetric:
        asymmetric["query_mlm"] = _build_mlm(asymmetric["query_mlm"], params, QUERY_MLM_PREFIX, compute, step_dir,
                                             meta_path, "query_config")
    return EncoderParts(mlm, weight, doc_tok, query_tok, strategy, activation, source=template, **settings,
                        **asymmetric)


def _build_mlm(config, params: dict[str, np.ndarray], prefix: str, compute, step_dir: Path, meta_path: Path,
               key: str) -> MaskedLM:
    values = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    try:
        return build_with_params(lambda: backbone_of(config).new_model(config, compute=compute), values)
    except ValueError as exc:
        raise ValueError(f"{step_dir}: checkpoint parameters '{prefix}*' do not fit the model config in "
                         f"{meta_path} (key {key!r}): {exc}") from None


def _query_tokenizer(query_folder: Path, doc_tok: WordPieceTokenizer, doc_folder: Path) -> WordPieceTokenizer:
    """The query module's own tokenizer; the document tokenizer where the query module lives in the document
    folder (a symmetric model, a bare OpenSearch folder) or its folder has no tokenizer files (it is the same
    tokenizer in every published model). Damaged files are an error naming them."""
    if query_folder != doc_folder and any((query_folder / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        return WordPieceTokenizer.from_dir(query_folder)
    return doc_tok


def template_folders(template: Path) -> tuple[Path, Path]:
    """(document transformer folder, query module folder) of a checkpoint's ``template/`` directory (a
    SparseEncoder directory without weight files); a symmetric model's query folder is its document folder."""
    template = Path(template)
    if not template.is_dir():
        raise FileNotFoundError(f"{template}: the checkpoint has no {TEMPLATE_DIR}/ directory (the source model's "
                                "tokenizer and module files); it cannot be rebuilt or exported")
    spec = read_sparse_encoder_dir(template, require_weights=False)
    if spec.query_mlm is not None:
        return spec.document.folder, spec.query_mlm.folder
    return spec.document.folder, (spec.document.folder if spec.query is None else spec.query.folder)


def check_path_arg(value: Any, name: str) -> str:
    """``value`` as a str; a TypeError naming ``name`` unless it is a non-empty str or Path."""
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise TypeError(f"{name} must be a non-empty str or Path, got {value!r}")
    return str(value)


def check_step(step: Any) -> int | None:
    """``step`` as an int (or None); a ValueError unless it is a non-negative integer or None."""
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer or None, got {step!r}")
    return int(step)


def _meta_config(meta: dict, meta_path: Path, key: str = "config"):
    raw = meta.get(key)
    if not isinstance(raw, dict):
        raise ValueError(f"{meta_path}: key {key!r} must hold the model's HF config object")
    try:
        return config_from_hf_dict(raw, source=f"{meta_path} (key {key!r})")
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # wrong value types the dataclass did not catch itself
        raise ConfigError(f"{meta_path} (key {key!r}): {exc}") from None


def _meta_query_mlm(meta: dict, meta_path: Path) -> dict[str, Any]:
    """An asymmetric checkpoint's query route: its config (the model is built later), pooling and length."""
    strategy, activation = _meta_pooling(meta, meta_path, "query_pooling")
    max_len = meta.get("query_max_seq_length")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"{meta_path}: key 'query_max_seq_length' must be a positive integer, got {max_len!r}")
    return {"query_mlm": _meta_config(meta, meta_path, "query_config"), "query_pooling_strategy": strategy,
            "query_activation": activation, "query_max_seq_length": max_len}


def _meta_pooling(meta: dict, meta_path: Path, key: str = "pooling") -> tuple[str, str]:
    pooling = meta.get(key) or {}
    strategy = pooling.get("pooling_strategy", "max") if isinstance(pooling, dict) else None
    activation = pooling.get("activation_function", "log1p_relu") if isinstance(pooling, dict) else None
    if strategy not in POOLING_STRATEGIES:
        raise ValueError(f"{meta_path}: key {key!r}: pooling_strategy must be one of {POOLING_STRATEGIES}, "
                         f"got {strategy!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{meta_path}: key {key!r}: activation_function must be one of {ACTIVATIONS}, "
                         f"got {activation!r}")
    return strategy, activation


def _meta_settings(meta: dict, meta_path: Path) -> dict[str, Any]:
    max_len = meta.get("max_seq_length")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"{meta_path}: key 'max_seq_length' must be a positive integer, got {max_len!r}")
    prompts = meta.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError(f"{meta_path}: key 'prompts' must be an object of strings, got {prompts!r}")
    sim = meta.get("similarity_fn_name") or "dot"
    if sim != "dot":
        raise ValueError(f"{meta_path}: similarity_fn_name {sim!r} is not supported (only 'dot')")
    default_prompt = meta.get("default_prompt_name")
    if default_prompt is not None and default_prompt not in prompts:
        raise ValueError(f"{meta_path}: default_prompt_name {default_prompt!r} is not one of the prompts")
    max_active = meta.get("max_active_dims")
    if max_active is not None and (isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1):
        raise ValueError(f"{meta_path}: key 'max_active_dims' must be a positive integer or null, got {max_active!r}")
    return {"max_seq_length": max_len, "similarity_fn_name": sim, "prompts": prompts,
            "default_prompt_name": default_prompt, "max_active_dims": max_active}


def _meta_shape(meta: dict, meta_path: Path) -> str:
    shape = meta.get("shape", "inference_free")  # checkpoints written before symmetric models were supported
    if shape not in SHAPES:
        raise ValueError(f"{meta_path}: key 'shape' must be one of {SHAPES}, got {shape!r}")
    return shape


def _restore_params(run_dir: Path, step: int | None, shape: str = "inference_free"
                    ) -> tuple[dict[str, np.ndarray], Path]:
    steps_dir = run_dir / STEPS_DIR
    if not steps_dir.is_dir():
        raise FileNotFoundError(f"{steps_dir}: the checkpoint directory holds no saved steps")
    steps = CheckpointSteps(run_dir, read_only=True)
    try:
        chosen = steps.latest_step() if step is None else step
        if chosen is None:
            raise FileNotFoundError(f"{steps_dir}: the checkpoint directory holds no saved steps")
        if chosen not in steps.all_steps():
            raise FileNotFoundError(f"{steps_dir}: no step {chosen} (saved steps: {steps.all_steps()})")
        step_dir = steps_dir / str(chosen)
        try:
            restored = steps.restore(chosen, with_opt=False)
        except (FileNotFoundError, ValueError):
            raise  # already name the directory
        except Exception as exc:  # noqa: BLE001 - orbax raises many types for damaged steps
            raise ValueError(f"{step_dir}: cannot read the orbax step ({type(exc).__name__}: {exc})") from None
    finally:
        steps.close()
    params = to_numpy_flat(restored["params"])
    if shape in ("symmetric", "asymmetric"):
        prefixes = (MLM_PREFIX,) if shape == "symmetric" else (MLM_PREFIX, QUERY_MLM_PREFIX)
        bad = sorted(k for k in params if not k.startswith(prefixes))
        missing = [p for p in prefixes if not any(k.startswith(p) for k in params)]
        if bad or missing:
            raise ValueError(f"{step_dir}: 'params' of a {shape} model must hold only "
                             f"{' and '.join(repr(p + '*') for p in prefixes)} entries (unexpected: {bad[:5]}, "
                             f"missing: {missing})")
        return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}, step_dir
    bad = sorted(k for k in params if k != QUERY_PARAM and not k.startswith(MLM_PREFIX))
    if QUERY_PARAM not in params or bad:
        raise ValueError(f"{step_dir}: 'params' must hold '{QUERY_PARAM}' and 'mlm.*' entries "
                         f"(missing: {[QUERY_PARAM] if QUERY_PARAM not in params else []}, unexpected: {bad[:5]})")
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}, step_dir
