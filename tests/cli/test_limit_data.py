"""python -m jsplade.cli.limit_data: the generated data set folder and the fresh student model."""

from __future__ import annotations

import contextlib
import io

from jsplade.cli import limit_data as cli
from jsplade.limit.data import generate_limit_corpus, limit_paths
from jsplade.retrieval.beir import load_beir
from jsplade.splade.encoder import SparseEncoder


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_data_and_student(tmp_path):
    code, out, err = _main([str(tmp_path / "data"), "--documents", "30", "--items-per-doc", "4,6", "--seed", "2",
                            "--student", str(tmp_path / "student")])
    assert code == 0, err
    paths = limit_paths()
    want = generate_limit_corpus(paths.items, [paths.limit / "queries.jsonl", paths.limit_small / "queries.jsonl"],
                                 30, (4, 6), seed=2)
    assert load_beir(tmp_path / "data") == want and out.startswith(f"wrote {tmp_path / 'data'}: 30 documents")
    student = SparseEncoder.from_pretrained(tmp_path / "student")
    assert student.shape == "inference_free" and student.vocab_size == 30522
    code, _, err = _main([str(tmp_path / "data")])
    assert code == 2 and "OUT_DIR" in err and "--overwrite" in err
    code, _, err = _main([str(tmp_path / "other"), "--items-per-doc", "5,900"])
    assert code == 2 and err.startswith("jsplade-limit-data: error: items_per_doc")
    assert not (tmp_path / "other").exists()
