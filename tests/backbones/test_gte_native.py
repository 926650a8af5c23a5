"""transformers' native ``GteForMaskedLM`` (independent PyTorch code) as a second reference.

Random recipe weights at full v3-gte shape, stored under new-impl names; transformers converts those
names at load time (NATIVE_GTE.md) given a GteConfig translated by ``GteConfig.to_hf_dict("gte")``.
Tolerance: 1e-4 relative to the largest |logit| (NATIVE_GTE.md observes ~1e-6 between float32 codes).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.fixtures import max_rel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jsplade import load_mlm  # noqa: E402
from jsplade.backbones.gte_config import v3_gte_config  # noqa: E402
from jsplade.backbones.recipe import recipe_state_dict  # noqa: E402
from jsplade.checkpoints.safetensors_io import write_safetensors  # noqa: E402


def _inputs(rng, batch, length, vocab):
    ids = rng.integers(1000, vocab - 500, size=(batch, length)).astype(np.int32)
    lengths = [length, length // 2 + 3][:batch]
    mask = np.zeros((batch, length), np.int32)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, 0], ids[b, n - 1] = 101, 102
        ids[b, n:] = 0
    return ids, mask


@pytest.mark.slow
@pytest.mark.parametrize("layers", [12])
def test_native_gte_matches_at_v3gte_shape(tmp_path, layers):
    config = v3_gte_config(num_hidden_layers=layers)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(config.to_json_string("new"))
    write_safetensors(folder / "model.safetensors", recipe_state_dict(config, seed=4242), {"format": "pt"})

    ours = load_mlm(folder)
    native_cfg = transformers.GteConfig(**{k: v for k, v in config.to_hf_dict("gte").items()
                                          if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    native = transformers.GteForMaskedLM.from_pretrained(folder, config=native_cfg, attn_implementation="eager")
    native.eval()

    ids, mask = _inputs(np.random.default_rng(0), 2, 96, config.vocab_size)
    with torch.inference_mode():
        ref = native(input_ids=torch.from_numpy(ids.astype(np.int64)),
                     attention_mask=torch.from_numpy(mask.astype(np.int64))).logits.numpy()
    got = np.asarray(ours(ids, mask))
    real = mask.astype(bool)
    assert max_rel(got[real], ref[real]) < 1e-4
    # And the SPLADE vectors the two imply.
    pool = lambda x: np.log1p(np.log1p(np.maximum(np.where(real[:, :, None], x, -np.inf).max(1), 0)))  # noqa: E731
    assert max_rel(pool(got), pool(ref)) < 1e-4
