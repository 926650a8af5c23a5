"""jsplade-convert: commands, summary, progress bar, --help, and errors as exit code 2 with a message (no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.fixtures import SE_FIXTURES

from jsplade import SparseEncoder
from jsplade.backbones.registry import known_namings
from jsplade.cli import convert as cli

ROOT = Path(__file__).resolve().parents[2]
MODEL = SE_FIXTURES / "model"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_to_jax_then_to_hf_with_summaries(tmp_path, capsys):
    assert cli.main(["to-jax", str(MODEL), str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'run'}: jsplade checkpoint directory (orbax step 0)")
    assert "jsplade_model.json" in out and "template/tokenizer.json" in out
    assert "31 tensors, 1,059,988 parameters" in out

    assert cli.main(["to-hf", str(tmp_path / "run"), str(tmp_path / "hf"), "--layout", "opensearch",
                     "--naming", "gte", "--step", "0"]) == 0
    out = capsys.readouterr().out
    assert "OpenSearch hub layout" in out and "native transformers GteForMaskedLM" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(lines) == {p.relative_to(tmp_path / "hf").as_posix()
                          for p in (tmp_path / "hf").rglob("*") if p.is_file()}
    assert "3.9 MB" in lines["model.safetensors"]
    assert "41 tensors, 1,059,988 parameters" in out.splitlines()[-1]  # native names: q/k/v and up/gate split
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "gte"
    original, exported = SparseEncoder.from_pretrained(MODEL).to_parts().flat_params(), \
        SparseEncoder.from_pretrained(tmp_path / "hf").to_parts().flat_params()
    assert all(np.array_equal(original[k], exported[k]) for k in original)


def test_progress_bar_counts_bytes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_MIN_BYTES", 1)
    assert cli.main(["to-hf", str(MODEL), str(tmp_path / "hf")]) == 0
    err = capsys.readouterr().err
    assert "writing weights" in err and "100%" in err and "4.04M" in err  # (30 tensors + static weight) bytes


def test_errors_are_exit_code_2_with_a_message(tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    cases = [
        (["to-jax", str(MODEL), str(tmp_path / "exists")], "destination exists"),
        (["to-hf", str(tmp_path / "exists"), str(tmp_path / "out")], "modules.json: not found"),
        (["to-hf", str(MODEL), str(tmp_path / "out"), "--step", "2"], "applies only to jsplade checkpoint"),
        (["to-jax", str(tmp_path / "no" / "such" / "dir"), str(tmp_path / "out")], "no such directory"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "jsplade-convert: error: " in err and message in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as info:
        cli.main(["to-hf", str(MODEL), str(tmp_path / "out"), "--layout", "flat"])
    assert info.value.code == 2 and "invalid choice: 'flat'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


def test_console_script_and_program_file(tmp_path):
    script = Path(sys.executable).parent / "jsplade-convert"
    assert script.is_file(), "run `pip install -e .` to register the console script"
    help_run = _run(str(script), "--help")
    assert help_run.returncode == 0 and "to-jax" in help_run.stdout and "to-hf" in help_run.stdout
    sub_help = _run(sys.executable, "convert/jsplade_convert.py", "to-hf", "--help")
    assert sub_help.returncode == 0
    assert "--layout {st,opensearch}" in sub_help.stdout
    assert "--naming {" + ",".join(known_namings()) + "}" in " ".join(sub_help.stdout.split())
    assert known_namings()[:2] == ["new", "gte"]
    bad = _run(sys.executable, "convert/jsplade_convert.py", "to-jax", str(tmp_path), str(tmp_path / "out"))
    assert bad.returncode == 2 and "modules.json: not found" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "out").exists()
