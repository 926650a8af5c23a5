"""Conversions between sentence-transformers directories and jsplade (orbax) checkpoint directories.

* ``to_jax(src, dst)``: a SparseEncoder directory (either layout, either dialect) or hub id → a jsplade
  checkpoint directory (``jsplade.checkpoints.orbax_dir`` layout: meta JSON, ``template/``, orbax step 0
  whose ``params`` item holds the flat ``{"mlm.<path>": array, "query.weight": array}`` the trainer uses).
* ``to_hf(src, dst, layout, naming)``: a jsplade checkpoint directory (latest step, or ``step``) or a
  SparseEncoder directory → an exported SparseEncoder directory (``jsplade.checkpoints.st_export``).

Both go through ``EncoderParts`` (``jsplade.checkpoints.parts``). Everything is read and checked before
anything is written; destinations are written atomically (a temporary sibling renamed into place) and an
existing destination is refused unless ``overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jsplade.checkpoints.orbax_dir import META_FILE, CheckpointSteps, copy_template, is_checkpoint_dir, write_meta
from jsplade.checkpoints.parts import check_path_arg, check_step, read_checkpoint, read_sparse_encoder
from jsplade.checkpoints.st_export import (DEFAULT_MAX_SHARD_BYTES, LAYOUTS, ExportSummary, Progress, check_choice,
                                           check_overwrite, list_files, refuse_existing, write_sparse_encoder)
from jsplade.files import atomic_directory


def to_jax(src: str | Path, dst: str | Path, overwrite: bool = False) -> ExportSummary:
    """Convert a SparseEncoder directory or hub id ``src`` into a jsplade checkpoint directory ``dst``
    (step 0). Returns an ``ExportSummary`` of what was written."""
    src_text = check_path_arg(src, "src")
    dst = Path(check_path_arg(dst, "dst"))
    check_overwrite(overwrite)
    local = Path(src_text).expanduser()
    if local.is_dir() and is_checkpoint_dir(local):
        raise ValueError(f"{local}: this is already a jsplade checkpoint directory ({META_FILE}); "
                         "use to_hf / 'jsplade-convert to-hf' to export it")
    refuse_existing(dst, overwrite, local if local.exists() else None)
    parts = read_sparse_encoder(src_text)
    params = parts.flat_params()
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        copy_template(parts.source, tmp)
        write_meta(tmp, parts.checkpoint_meta())
        steps = CheckpointSteps(tmp, keep=None)
        try:
            steps.save(0, params, force=True)
            steps.wait()
        finally:
            steps.close()
        files = list_files(tmp)
    n_params = sum(int(v.size) for v in params.values())
    return ExportSummary(dst, "jsplade checkpoint directory (orbax step 0)", files, len(params), n_params)


def to_hf(src: str | Path, dst: str | Path, layout: str = "st", naming: str | None = None, step: int | None = None,
          overwrite: bool = False, *, model_card_metrics: dict[str, Any] | None = None,
          max_shard_bytes: int | None = DEFAULT_MAX_SHARD_BYTES, progress: Progress | None = None) -> ExportSummary:
    """Export a jsplade checkpoint directory (the latest step unless ``step``) or a SparseEncoder directory
    ``src`` as a sentence-transformers directory ``dst`` (``layout`` "st" | "opensearch", ``naming`` one of
    the backbone's weight namings, default its canonical one — for GTE "new" | "gte"; see
    ``jsplade.checkpoints.st_export.write_sparse_encoder``)."""
    src_text = check_path_arg(src, "src")
    dst = Path(check_path_arg(dst, "dst"))
    check_choice(layout, LAYOUTS, "layout")
    if naming is not None and not isinstance(naming, str):
        raise TypeError(f"naming must be a str or None, got {naming!r}")
    check_overwrite(overwrite)
    step = check_step(step)
    local = Path(src_text).expanduser()
    refuse_existing(dst, overwrite, local if local.exists() else None)
    if local.is_dir() and is_checkpoint_dir(local):
        parts = read_checkpoint(local, step)
    else:
        if step is not None:
            raise ValueError(f"{src_text}: step={step} applies only to jsplade checkpoint directories "
                             f"(with {META_FILE}); this source is a sentence-transformers model")
        parts = read_sparse_encoder(src_text)
    return write_sparse_encoder(parts, dst, layout=layout, naming=naming, overwrite=overwrite,
                                max_shard_bytes=max_shard_bytes, model_card_metrics=model_card_metrics,
                                progress=progress)
