"""Bare HF model folders (``config.json`` + safetensors) ⇄ ``GteForMaskedLM``.

``load_mlm`` reads either naming (new-impl ``new.*`` or transformers' native ``gte.*``), a single
``model.safetensors`` or a sharded index, checks every tensor against the config (missing, unexpected,
wrong shape: one error listing all of them, naming the file) and never executes code from the folder:
``auto_map`` is kept as a name only and pickle files are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.gte import ComputeOptions, GteForMaskedLM
from jsplade.backbones.params import build_with_params, flat_params
from jsplade.checkpoints.safetensors_io import read_weights_dir, write_weights_dir
from jsplade.backbones.weight_map import detect_naming, hf_to_params, params_to_hf


def _check_folder(folder: str | Path) -> Path:
    if folder is None or not isinstance(folder, (str, Path)):
        raise TypeError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a model directory, got a file")
    return folder


def load_mlm(folder: str | Path, compute: ComputeOptions | None = None) -> GteForMaskedLM:
    """Load a ``NewForMaskedLM`` / ``GteForMaskedLM`` checkpoint folder as a jsplade model.

    ``model = load_mlm(folder); logits_BxLxV = model(input_ids, attention_mask)``.
    """
    folder = _check_folder(folder)
    config = GteConfig.from_json_file(folder / "config.json")
    tensors, files = read_weights_dir(folder)
    source = files[0] if len(files) == 1 else folder
    values = hf_to_params(tensors, config, detect_naming(tensors.keys()), source=str(source))
    return build_with_params(lambda: GteForMaskedLM(config, compute=compute), values)


def mlm_from_params(config: GteConfig, values: dict[str, np.ndarray],
                    compute: ComputeOptions | None = None) -> GteForMaskedLM:
    """A model from flat jsplade parameters (``jsplade.backbones.params`` paths)."""
    return build_with_params(lambda: GteForMaskedLM(config, compute=compute), values)


def mlm_state_dict(model: GteForMaskedLM, naming: str = "new") -> dict[str, np.ndarray]:
    """The HF state dict (float32 numpy) of a model, without the tied decoder weight."""
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flat_params(model).items()}
    return params_to_hf(flat, model.config, naming)


def save_mlm(model: GteForMaskedLM, folder: str | Path, naming: str = "new", *,
             max_shard_bytes: int | None = 5 * 1024**3,
             progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write ``config.json`` + safetensors into an existing ``folder`` (the caller handles atomicity of
    the directory; every file is written atomically). Returns the written paths."""
    from jsplade.files import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = mlm_state_dict(model, naming)
    paths = write_weights_dir(folder, state, max_shard_bytes=max_shard_bytes,
                              metadata={"format": "pt"}, progress=progress)
    atomic_write_text(folder / "config.json", model.config.to_json_string(naming))
    return [folder / "config.json", *paths]
