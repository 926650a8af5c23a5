"""README.md's examples run as written: every ```python block is executed, with the hub id and folder names
in it pointed at the project's fixtures (no network here), and its results checked."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers.fixtures import REPO, SE_FIXTURES

README = REPO / "README.md"
HUB_ID = "opensearch-project/opensearch-neural-sparse-encoding-doc-v3-gte"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_a_library_example():
    blocks = _python_blocks()
    assert blocks and "from jsplade import SparseEncoder, load_mlm" in blocks[0]


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    source = _python_blocks()[index]
    replacements = {HUB_ID: str(SE_FIXTURES / "model"), "path/to/hf-folder": str(SE_FIXTURES / "model"),
                    "out/encoder": str(tmp_path / "encoder")}
    for old, new in replacements.items():
        source = source.replace(f'"{old}"', repr(new))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(source, f"README.md python block {index}", "exec"), namespace)
    if index == 0:
        enc, S, logits, hidden = namespace["enc"], namespace["S"], namespace["logits"], namespace["hidden"]
        assert S.shape == (1, 1) and S[0, 0] > 0
        assert logits.shape[:2] == hidden.shape[:2] and logits.shape[-1] == enc.vocab_size
        assert (tmp_path / "encoder" / "config_sentence_transformers.json").is_file()
        assert "[(" in capsys.readouterr().out  # the decoded (token, weight) pairs were printed
        again = type(enc).from_pretrained(tmp_path / "encoder")
        np.testing.assert_array_equal(again.encode_query(["Which planet is known as the Red Planet?"]).toarray(),
                                      namespace["Q"].toarray())
