"""Shared test helpers: fixture locations (copies inside the project's tests/fixtures), the GTE fixture
cases, recipe checkpoints and the relative-error measure every tolerance uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
GTE_FIXTURES = FIXTURES / "gte"
SE_FIXTURES = FIXTURES / "sparse_encoder"


TINY_CASES = ("tiny_ntk", "tiny_mixed_ntk", "tiny_plain_rope_rebuild", "tiny_logn_types",
              "tiny_logn_clip1", "tiny_unpacked_rms")
V3_CASES = ("v3gte_short", "v3gte_2layer_8192")


@dataclass
class GteCase:
    name: str
    folder: Path
    case: dict
    config_json: dict
    inputs: dict
    expected: dict

    @property
    def seed(self) -> int:
        return int(self.case["weights"]["seed"])


def load_gte_case(name: str) -> GteCase:
    folder = GTE_FIXTURES / name
    with np.load(folder / "inputs.npz") as f:
        inputs = {k: f[k] for k in f.files}
    with np.load(folder / "expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    return GteCase(name, folder, json.loads((folder / "case.json").read_text()),
                   json.loads((folder / "config.json").read_text()), inputs, expected)


def write_recipe_checkpoint(case: GteCase, dest: Path) -> Path:
    """A HF model folder (config.json + model.safetensors, new-impl names) with the case's recipe weights."""
    from jsplade.backbones.gte_config import GteConfig
    from jsplade.backbones.recipe import recipe_state_dict
    from jsplade.checkpoints.safetensors_io import write_safetensors


    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(case.config_json, indent=2))
    config = GteConfig.from_hf_dict(case.config_json)
    write_safetensors(dest / "model.safetensors", recipe_state_dict(config, case.seed), {"format": "pt"})
    return dest


def max_rel(actual, expected) -> float:
    """max |actual − expected| / max |expected| (relative to the array's scale)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def packed_row(docs, length: int, pad: int):
    """(input_ids, attention_mask, position_ids, segment_ids) [1, length] of documents side by side in one row:
    segment ids 0, 1, … (-1 on padding), positions restarting at 0 per document."""
    import numpy as np

    ids = np.full((1, length), pad, np.int32)
    mask = np.zeros((1, length), np.int32)
    seg = np.full((1, length), -1, np.int32)
    pos = np.zeros((1, length), np.int32)
    start = 0
    for s, d in enumerate(docs):
        ids[0, start:start + len(d)] = d
        mask[0, start:start + len(d)] = 1
        seg[0, start:start + len(d)] = s
        pos[0, start:start + len(d)] = np.arange(len(d))
        start += len(d)
    return ids, mask, pos, seg
