"""Conversions between sentence-transformers directories and jsplade (orbax) checkpoint directories.

* ``to_jax(src, dst)``: a SparseEncoder directory (either layout, either dialect) or hub id → a jsplade
  checkpoint directory (``jsplade.checkpoints.orbax_dir`` layout: meta JSON, ``template/``, orbax step 0 whose
  ``params`` item holds the flat ``{"mlm.<path>": array, "query.weight": array}`` the trainer uses).
* ``to_hf(src, dst, layout, naming)``: a jsplade checkpoint directory (latest step, or ``step``) or a
  SparseEncoder directory → an exported SparseEncoder directory (``jsplade.checkpoints.st_export``).
* ``load_checkpoint_encoder(run_dir, step)``: a ``SparseEncoder`` rebuilt from a checkpoint's meta,
  template (tokenizers) and parameters.

Everything is read and checked before anything is written; destinations are written atomically (a
temporary sibling renamed into place) and an existing destination is refused unless ``overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jsplade.backbones.gte_config import ConfigError, GteConfig
from jsplade.files import atomic_directory
from jsplade.checkpoints.st_format import read_sparse_encoder_dir
from jsplade.checkpoints.st_export import (DEFAULT_MAX_SHARD_BYTES, LAYOUTS, ExportSummary, Progress, check_choice,
                               export_sparse_encoder, list_files)
from jsplade.checkpoints.orbax_dir import (META_FILE, STEPS_DIR, TEMPLATE_DIR, CheckpointSteps, copy_template,
                                      is_checkpoint_dir, read_meta, to_numpy_flat, write_meta)
from jsplade.backbones.weight_map import NAMINGS

QUERY_PARAM = "query.weight"
MLM_PREFIX = "mlm."


# ----------------------------------------------------------------------------- public API
def to_jax(src: str | Path, dst: str | Path, overwrite: bool = False) -> ExportSummary:
    """Convert a SparseEncoder directory or hub id ``src`` into a jsplade checkpoint directory ``dst``
    (step 0). Returns an ``ExportSummary`` of what was written."""
    from jsplade.splade.encoder import SparseEncoder

    src_text = _check_path_arg(src, "src")
    dst = Path(_check_path_arg(dst, "dst"))
    _check_overwrite(overwrite)
    local = Path(src_text).expanduser()
    if local.is_dir() and is_checkpoint_dir(local):
        raise ValueError(f"{local}: this is already a jsplade checkpoint directory ({META_FILE}); "
                         "use to_hf / 'jsplade-convert to-hf' to export it")
    _refuse_existing(dst, overwrite, local if local.exists() else None)
    encoder = SparseEncoder.from_pretrained(src_text)
    params = encoder_params(encoder)
    meta = checkpoint_meta(encoder)
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        copy_template(encoder.source, tmp)
        write_meta(tmp, meta)
        steps = CheckpointSteps(tmp, keep=None)
        try:
            steps.save(0, params, force=True)
            steps.wait()
        finally:
            steps.close()
        files = list_files(tmp)
    n_params = sum(int(v.size) for v in params.values())
    return ExportSummary(dst, "jsplade checkpoint directory (orbax step 0)", files, len(params), n_params)


def to_hf(src: str | Path, dst: str | Path, layout: str = "st", naming: str = "new", step: int | None = None,
          overwrite: bool = False, *, model_card_metrics: dict[str, Any] | None = None,
          max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES, progress: Progress | None = None) -> ExportSummary:
    """Export a jsplade checkpoint directory (the latest step unless ``step``) or a SparseEncoder directory
    ``src`` as a sentence-transformers directory ``dst`` (``layout`` "st" | "opensearch", ``naming``
    "new" | "gte"; see ``jsplade.checkpoints.st_export.export_sparse_encoder``)."""
    from jsplade.splade.encoder import SparseEncoder

    src_text = _check_path_arg(src, "src")
    dst = Path(_check_path_arg(dst, "dst"))
    check_choice(layout, LAYOUTS, "layout")
    check_choice(naming, NAMINGS, "naming")
    _check_overwrite(overwrite)
    step = _check_step(step)
    local = Path(src_text).expanduser()
    _refuse_existing(dst, overwrite, local if local.exists() else None)
    if local.is_dir() and is_checkpoint_dir(local):
        encoder = load_checkpoint_encoder(local, step)
    else:
        if step is not None:
            raise ValueError(f"{src_text}: step={step} applies only to jsplade checkpoint directories "
                             f"(with {META_FILE}); this source is a sentence-transformers model")
        encoder = SparseEncoder.from_pretrained(src_text)
    return export_sparse_encoder(encoder, dst, layout=layout, naming=naming, overwrite=overwrite,
                                 max_shard_bytes=max_shard_bytes,
                                 model_card_metrics=model_card_metrics, progress=progress)


def load_checkpoint_encoder(run_dir: str | Path, step: int | None = None, *, compute=None):
    """A ``jsplade.SparseEncoder`` rebuilt from a jsplade checkpoint directory: the model config, pooling
    and encoder settings from its meta JSON, the tokenizers from ``template/``, the parameters of orbax
    step ``step`` (default: the latest). ``encoder.source`` is the template directory.

    Raises ``ValueError`` / ``FileNotFoundError`` naming the file for: not a checkpoint directory, a bad meta
    file or unsupported config option, a missing template or tokenizer, no such step, parameters missing or
    unexpected, a vocabulary mismatch (config vs tokenizers vs static weight), shapes that do not fit the config.
    """
    from jsplade.splade.encoder import SparseEncoder
    from jsplade.backbones.gte import GteForMaskedLM
    from jsplade.backbones.params import build_with_params
    from jsplade.splade.pooling import check_pooling
    from jsplade.splade.model import SpladeModel
    from jsplade.splade.static_embedding import StaticQueryEmbedding
    from jsplade.backbones.tokenizer import WordPieceTokenizer

    run_dir = Path(_check_path_arg(run_dir, "run_dir"))
    step = _check_step(step)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a directory (expected a jsplade checkpoint directory)")
    meta_path = run_dir / META_FILE
    meta = read_meta(run_dir)
    config = _meta_config(meta, meta_path)
    pooling = meta.get("pooling") or {}
    strategy = pooling.get("pooling_strategy", "max") if isinstance(pooling, dict) else None
    activation = pooling.get("activation_function", "log1p_relu") if isinstance(pooling, dict) else None
    try:
        check_pooling(strategy, activation)
    except ValueError as exc:
        raise ValueError(f"{meta_path}: key 'pooling': {exc}") from None
    settings = _meta_settings(meta, meta_path)

    template = run_dir / TEMPLATE_DIR
    doc_folder, query_folder = template_folders(template)
    doc_tok = WordPieceTokenizer.from_dir(doc_folder)
    if any((query_folder / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        query_tok = WordPieceTokenizer.from_dir(query_folder)
    else:
        query_tok = doc_tok  # no tokenizer files in the query module: it shares the document tokenizer

    params, step_dir = _restore_params(run_dir, step)
    weight = params[QUERY_PARAM]
    if weight.ndim != 1:
        raise ValueError(f"{step_dir}: parameter '{QUERY_PARAM}' must be 1-D [vocab], got shape {list(weight.shape)}")
    sizes = {f"{meta_path.name} config vocab_size": config.vocab_size,
             f"document tokenizer ({doc_folder})": doc_tok.vocab_size,
             f"query tokenizer ({query_folder})": query_tok.vocab_size,
             f"static weight '{QUERY_PARAM}' in {step_dir}": int(weight.shape[0])}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{run_dir}: vocabulary sizes disagree: "
                         + ", ".join(f"{k} = {v}" for k, v in sizes.items()) + "; all must be equal")
    mlm_values = {k[len(MLM_PREFIX):]: v for k, v in params.items() if k.startswith(MLM_PREFIX)}
    try:
        mlm = build_with_params(lambda: GteForMaskedLM(config, compute=compute), mlm_values)
    except ValueError as exc:
        raise ValueError(f"{step_dir}: checkpoint parameters do not fit the config in {meta_path}: {exc}") from None
    model = SpladeModel(mlm, StaticQueryEmbedding(weight), strategy, activation)
    return SparseEncoder(model, doc_tok, query_tok, source=template, **settings)


def encoder_params(encoder) -> dict[str, np.ndarray]:
    """The flat parameters of an encoder's ``SpladeModel`` as float32 numpy arrays
    (``{"mlm.<path>": ..., "query.weight": ...}``, the trainer's checkpoint form)."""
    from jsplade.backbones.params import flat_params

    return to_numpy_flat(flat_params(encoder.model))


def checkpoint_meta(encoder) -> dict[str, Any]:
    """The meta JSON object of a checkpoint of ``encoder`` (the keys the trainer writes, plus the encoder's
    ``default_prompt_name`` and ``max_active_dims``)."""
    return {
        "config": encoder.model.mlm.config.to_hf_dict("new"),
        "pooling": {"pooling_strategy": encoder.model.pooling_strategy,
                    "activation_function": encoder.model.activation},
        "max_seq_length": int(encoder.max_seq_length),
        "similarity_fn_name": encoder.similarity_fn_name,
        "prompts": dict(encoder.prompts),
        "default_prompt_name": encoder.default_prompt_name,
        "max_active_dims": encoder.max_active_dims,
        "source": str(encoder.source) if encoder.source is not None else None,
    }


def template_folders(template: Path) -> tuple[Path, Path]:
    """(document transformer folder, query module folder) of a checkpoint's ``template/`` directory (a
    SparseEncoder directory without weight files)."""
    template = Path(template)
    if not template.is_dir():
        raise FileNotFoundError(f"{template}: the checkpoint has no {TEMPLATE_DIR}/ directory (the source model's "
                                "tokenizer and module files); it cannot be rebuilt or exported")
    spec = read_sparse_encoder_dir(template, require_weights=False)
    return spec.document.folder, spec.query.folder


# ----------------------------------------------------------------------------- helpers
def _check_path_arg(value: Any, name: str) -> str:
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise TypeError(f"{name} must be a non-empty str or Path, got {value!r}")
    return str(value)


def _check_overwrite(overwrite: Any) -> None:
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")


def _check_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer or None, got {step!r}")
    return int(step)


def _refuse_existing(dst: Path, overwrite: bool, src: Path | None) -> None:
    """Fail before any loading: an existing ``dst`` without ``overwrite``, or ``dst`` being the source."""
    if src is not None and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the destination is the source directory; choose another destination")
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{dst}: destination exists (pass overwrite=True / --overwrite to replace it)")
        if not dst.is_dir():
            raise FileExistsError(f"{dst}: destination exists and is not a directory; refusing to replace it")


def _meta_config(meta: dict, meta_path: Path) -> GteConfig:
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"{meta_path}: key 'config' must hold the model's HF config object")
    try:
        return GteConfig.from_hf_dict(raw, source=f"{meta_path} (key 'config')")
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # wrong value types the dataclass did not catch itself
        raise ConfigError(f"{meta_path} (key 'config'): {exc}") from None


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


def _restore_params(run_dir: Path, step: int | None) -> tuple[dict[str, np.ndarray], Path]:
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
    bad = sorted(k for k in params if k != QUERY_PARAM and not k.startswith(MLM_PREFIX))
    if QUERY_PARAM not in params or bad:
        raise ValueError(f"{step_dir}: 'params' must hold '{QUERY_PARAM}' and 'mlm.*' entries "
                         f"(missing: {[QUERY_PARAM] if QUERY_PARAM not in params else []}, unexpected: {bad[:5]})")
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}, step_dir
