"""The benchmark model: a v3-gte-shaped SparseEncoder with seeded random ("recipe") weights.

One directory that both sides load: jsplade (``SparseEncoder.from_pretrained``) and
sentence-transformers (``SparseEncoder(path)``, transformers' native ``GteForMaskedLM``: the document
transformer is written with native ``gte`` naming, so no remote code is needed). Tokenizers and the
static query weights come from the bundled tiny fixture model (bert-base-uncased vocabulary, 30522).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = REPO / "tests" / "fixtures" / "sparse_encoder" / "model_st_native"


def build_bench_model(dst: Path, num_layers: int = 12, seed: int = 1234) -> Path:
    """Write the model once (idempotent: an existing complete directory is reused)."""
    from jsplade.backbones.gte import GTE
    from jsplade.backbones.gte_config import v3_gte_config
    from jsplade.backbones.recipe import recipe_state_dict
    from jsplade.checkpoints.hf_folder import mlm_from_params, save_mlm
    from jsplade.files import atomic_directory

    dst = Path(dst)
    marker = dst / "bench_model.json"
    if marker.exists() and json.loads(marker.read_text()).get("num_layers") == num_layers:
        return dst
    config = v3_gte_config(num_hidden_layers=num_layers)
    with atomic_directory(dst, overwrite=True) as tmp:
        shutil.copytree(FIXTURE_MODEL, tmp, dirs_exist_ok=True)
        doc = tmp / "document_0_MLMTransformer"
        (doc / "model.safetensors").unlink()
        mlm = mlm_from_params(config, GTE.hf_to_params(recipe_state_dict(config, seed), config))
        save_mlm(mlm, doc, naming="gte")
        (tmp / "bench_model.json").write_text(json.dumps({"num_layers": num_layers, "seed": seed}))
    return dst
