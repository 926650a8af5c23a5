"""Bare HF model folders (``config.json`` + safetensors) ⇄ backbone models (``jsplade.backbones``).

``load_mlm`` picks the backbone family from the config's ``model_type`` (``jsplade.backbones.registry``),
reads any of its weight namings (for GTE: new-impl ``new.*`` or transformers' native ``gte.*``), a single
``model.safetensors`` or a sharded index, checks every tensor against the config (missing, unexpected,
wrong shape: one error listing all of them, naming the file) and never executes code from the folder:
``auto_map`` is kept as a name only and pickle files are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.params import build_with_params, flat_params
from jsplade.backbones.protocol import BackboneConfig, MaskedLM
from jsplade.backbones.registry import backbone_of, config_from_hf_dict
from jsplade.checkpoints.safetensors_io import read_weights_dir, write_weights_dir
from jsplade.files import atomic_write_text, read_json_object


def _check_folder(folder: str | Path) -> Path:
    if folder is None or not isinstance(folder, (str, Path)):
        raise TypeError(f"folder must be a path (str or pathlib.Path), got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a model directory, got a file")
    return folder


def load_mlm(folder: str | Path, compute: ComputeOptions | None = None) -> MaskedLM:
    """Load a masked-LM checkpoint folder (e.g. ``NewForMaskedLM`` / ``GteForMaskedLM``) as a jsplade model.

    ``model = load_mlm(folder); logits = model(input_ids=ids, attention_mask=mask)``.
    """
    folder = _check_folder(folder)
    path = folder / "config.json"
    config = config_from_hf_dict(read_json_object(path, what="HF model config"), source=str(path))
    tensors, files = read_weights_dir(folder)
    source = files[0] if len(files) == 1 else folder
    family = backbone_of(config)
    values = family.hf_to_params(tensors, config, source=str(source))
    return build_with_params(lambda: family.new_model(config, compute=compute), values)


def mlm_from_params(config: BackboneConfig, values: dict[str, np.ndarray],
                    compute: ComputeOptions | None = None) -> MaskedLM:
    """A model from flat jsplade parameters (``jsplade.backbones.params`` paths)."""
    return build_with_params(lambda: backbone_of(config).new_model(config, compute=compute), values)


def mlm_state_dict(model: MaskedLM, naming: str | None = None) -> dict[str, np.ndarray]:
    """The HF state dict (float32 numpy) of a model, without the tied decoder weight."""
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flat_params(model).items()}
    return backbone_of(model).params_to_hf(flat, model.config, naming)


def save_mlm(model: MaskedLM, folder: str | Path, naming: str | None = None, *,
             max_shard_bytes: int | None = 5 * 1024**3,
             progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write ``config.json`` + safetensors into an existing ``folder`` (the caller handles atomicity of
    the directory; every file is written atomically), in ``naming`` (default: the family's canonical one).
    Returns the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = mlm_state_dict(model, naming)
    paths = write_weights_dir(folder, state, max_shard_bytes=max_shard_bytes,
                              metadata={"format": "pt"}, progress=progress)
    atomic_write_text(folder / "config.json", model.config.to_json_string(naming))
    return [folder / "config.json", *paths]
