"""jsplade checkpoint directories (orbax): what the trainer writes and the converters read.

Layout::

    run_dir/
      jsplade_model.json    format marker + everything needed to rebuild the model without weights:
                            HF config (new-impl naming), pooling, max_seq_length, prompts, …
      template/             the source SparseEncoder directory without its weight files (tokenizers,
                            module configs), so an exported directory has exactly the source's files
      checkpoints/<step>/   orbax steps; items: ``params`` (flat {"mlm.<path>": array, "query.weight": array}),
                            optionally ``opt`` (optimizer state) and ``progress`` (JSON: step, epoch, …)

Saves go through orbax's CheckpointManager (atomic per step: a step directory only counts once its
commit marker exists; keep-N; optional async), so a crash never leaves a half-written step that
looks complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jsplade.files import atomic_write_json

FORMAT = "jsplade-checkpoint"
VERSION = 1
META_FILE = "jsplade_model.json"
TEMPLATE_DIR = "template"
STEPS_DIR = "checkpoints"
WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def is_checkpoint_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a jsplade checkpoint directory (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported {FORMAT} version {meta.get('version')!r} (this jsplade reads {VERSION})")
    return meta


def write_meta(run_dir: str | Path, meta: Mapping[str, Any]) -> None:
    body = {"format": FORMAT, "version": VERSION, **{k: v for k, v in meta.items() if k not in ("format", "version")}}
    atomic_write_json(Path(run_dir) / META_FILE, body)


def copy_template(source_dir: str | Path, run_dir: str | Path) -> Path:
    """Copy a SparseEncoder directory without weight files into ``run_dir/template``."""
    source_dir, dest = Path(source_dir), Path(run_dir) / TEMPLATE_DIR
    if dest.exists():
        shutil.rmtree(dest)

    def ignore(folder, names):
        return [n for n in names if n.endswith(WEIGHT_FILE_SUFFIXES) or n.endswith(".safetensors.index.json")
                or n in (".git", "__pycache__") or n.endswith(".py")]

    shutil.copytree(source_dir, dest, ignore=ignore)
    return dest


class CheckpointSteps:
    """Orbax steps under ``run_dir/checkpoints`` (keep-N, every-N, async)."""

    def __init__(self, run_dir: str | Path, *, keep: int | None = 3, every: int = 1, async_save: bool = False,
                 read_only: bool = False):
        self.dir = (Path(run_dir) / STEPS_DIR).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(1, int(every)), enable_async_checkpointing=async_save,
            create=not read_only, read_only=read_only)
        self.manager = ocp.CheckpointManager(self.dir, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, params_flat: Mapping[str, Any], *, opt_state: Any = None,
             progress: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        items: dict[str, Any] = {"params": ocp.args.StandardSave(dict(params_flat))}
        if opt_state is not None:
            items["opt"] = ocp.args.StandardSave(opt_state)
        if progress is not None:
            items["progress"] = ocp.args.JsonSave(dict(progress))
        return self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, step: int | None = None, *, params_target: Any = None, opt_target: Any = None,
                with_opt: bool = True) -> dict[str, Any]:
        """{"params": flat dict, "opt": state or missing, "progress": dict or missing, "step": int}."""
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"{self.dir}: no checkpoint steps")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(f"{self.dir}: no checkpoint for step {step} (have {self.all_steps()})")
        present = set(self.manager.item_metadata(step).keys()) if hasattr(self.manager, "item_metadata") else set()
        present = present or {p.name for p in (self.dir / str(step)).iterdir() if p.is_dir()}
        items: dict[str, Any] = {"params": ocp.args.StandardRestore(params_target)}
        if with_opt and "opt" in present:
            items["opt"] = ocp.args.StandardRestore(opt_target)
        if "progress" in present:
            items["progress"] = ocp.args.JsonRestore()
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        result = {"params": dict(out["params"]), "step": step}
        if "opt" in items:
            result["opt"] = out["opt"]
        if "progress" in items:
            result["progress"] = out["progress"]
        return result

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def to_numpy_flat(params_flat: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(jax.device_get(v)) for k, v in params_flat.items()}
