"""jsplade-train (jsplade.cli.train): --help, ``--set`` value parsing, argument and config errors as exit
code 2 with one message and no traceback (and nothing written), ``-v/--verbose`` logging set-up, and one tiny
run (fixture model, 2 pairs, 1 step): the summary line matches metrics.jsonl, the overrides reach the run, and
a default run lets no INFO record of orbax/absl/JAX reach the terminal while jsplade's own output does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fixtures import REPO, SE_FIXTURES

from jsplade.cli import train as cli
from jsplade.training.metrics import read_metrics

MODEL = SE_FIXTURES / "model"
PAIRS = REPO / "train" / "configs" / "limit_samples_2.jsonl"
LIBRARIES = ("orbax", "absl", "jax")


def _config(tmp_path: Path, **settings) -> Path:
    base = {"base_model": str(MODEL), "train_data": str(PAIRS), "columns": ["query", "document"],
            "output_dir": str(tmp_path / "run"), "batch_size": 2, "max_steps": 1}
    base.update(settings)
    path = tmp_path / "train.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items()))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- parsing
def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jsplade-train")
    for option in ("config", "--base-model", "--output-dir", "--set KEY=VALUE", "-v, --verbose", "--distributed",
                   "--coordinator", "--num-processes", "--process-id"):
        assert option in out, option
    assert "jsplade.training.config.TrainConfig" in out  # the module docstring is the description


def test_set_values_are_parsed_as_toml_with_a_string_fallback():
    parsed = cli._parse_set(["batch_size=8", "learning_rate=1e-4", "dropout=false", 'columns=["q", "d"]',
                             ' mesh = "data=2,fsdp=4"', "compute_dtype=bfloat16", "output_dir=runs/a=b",
                             "warmup_ratio=0.25"])
    assert parsed == {"batch_size": 8, "learning_rate": 1e-4, "dropout": False, "columns": ["q", "d"],
                      "mesh": "data=2,fsdp=4", "compute_dtype": "bfloat16", "output_dir": "runs/a=b",
                      "warmup_ratio": 0.25}
    assert type(parsed["batch_size"]) is int and type(parsed["dropout"]) is bool
    with pytest.raises(ValueError, match="--set expects key=value, got 'batch_size'"):
        cli._parse_set(["batch_size"])


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: config"),
    (["c.toml", "--num-processes", "two"], "argument --num-processes: invalid int value: 'two'"),
    (["c.toml", "--process-id", "1.5"], "argument --process-id: invalid int value: '1.5'"),
    (["c.toml", "--bogus"], "unrecognized arguments: --bogus"),
    (["c.toml", "--set"], "argument --set: expected one argument"),
])
def test_bad_arguments_exit_2_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: jsplade-train" in err and f"jsplade-train: error: {message}" in err


def test_config_and_data_errors_exit_2_before_any_compute(tmp_path, capsys):
    config = _config(tmp_path)
    malformed = tmp_path / "malformed.toml"
    malformed.write_text("batch_size = = 1\n")
    cases = [
        ([str(tmp_path / "absent.toml")], f"{tmp_path / 'absent.toml'}: config file not found"),
        ([str(malformed)], f"{malformed}: malformed TOML"),
        ([str(config), "--set", "oops"], "--set expects key=value, got 'oops'"),
        ([str(config), "--set", "batch_size=0"], f"{config}: config key 'batch_size' must be >= 1, got 0"),
        ([str(config), "--set", "learning_rat=1e-5"], f"{config}: unknown config key(s): 'learning_rat' "
                                                      "(did you mean 'learning_rate'?)"),
        ([str(config), "--set", "columns=[query,document]"], f"{config}: config key 'columns' must be of type list"),
        ([str(config), "--set", "export_naming=nonsense"], f"{config}: config key 'export_naming' must be one of"),
        ([str(config), "--set", 'base_model=""'], "config key 'base_model' is empty"),
        ([str(config), "--set", f'train_data="{tmp_path / "none.jsonl"}"'],
         f"{tmp_path / 'none.jsonl'}: training data file not found"),
        ([str(config), "--set", f'train_data="{config}"'], "unsupported training data format '.toml'"),
        ([str(config), "--set", "batch_size=4"], "batch_size 4 is larger than the dataset"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert lines[-1].startswith("jsplade-train: error: ") and message in lines[-1], (argv, captured.err)
        assert "Traceback" not in captured.err and captured.out == "", argv
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_verbose_flag_sets_up_logging(tmp_path, capsys):
    """Default: root at WARNING, jsplade at INFO, absl quieted; ``-v``: root at INFO (every library's INFO)."""
    bad = [str(tmp_path / "absent.toml")]
    assert cli.main(bad) == 2
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("jsplade").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("absl").getEffectiveLevel() > logging.INFO
    assert not logging.getLogger("jax").isEnabledFor(logging.INFO)
    assert cli.main([*bad, "--verbose"]) == 2
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("jax").isEnabledFor(logging.INFO)
    assert logging.getLogger("jsplade").isEnabledFor(logging.INFO)
    assert cli.main([*bad, "-v"]) == 2 and logging.getLogger().level == logging.INFO
    capsys.readouterr()


# ----------------------------------------------------------------------------- logging in a fresh process
def test_a_fresh_process_shows_jsplade_info_and_hides_jax_info_unless_verbose(tmp_path):
    """``--coordinator`` with one process starts JAX's distributed service (JAX logs it at INFO) and jsplade
    logs the process layout at INFO; a bad config then ends the run at once with exit code 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = 0\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    runs = {}
    for flags in ((), ("-v",)):  # both at once: most of the time is importing JAX
        argv = [sys.executable, "-m", "jsplade.cli.train", str(bad), "--coordinator", f"127.0.0.1:{_free_port()}",
                "--num-processes", "1", "--process-id", "0", *flags]
        runs[flags] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                       cwd=REPO)
    outputs = {}
    for flags, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 2, stderr
        last = stderr.splitlines()[-1]
        assert last == f"jsplade-train: error: {bad}: config key 'batch_size' must be >= 1, got 0"
        assert re.search(r"^INFO process 0 of 1, \d+ local / \d+ global devices$", stderr, re.MULTILINE)
        assert "Traceback" not in stderr
        outputs[flags] = [line for line in stderr.splitlines() if line.startswith("INFO ")]
    assert len(outputs[()]) == 1 and outputs[()][0].startswith("INFO process 0 of 1")  # only jsplade's
    library_info = [line for line in outputs[("-v",)] if not line.startswith("INFO process ")]
    assert any("JAX distributed service" in line for line in library_info), outputs[("-v",)]


# ----------------------------------------------------------------------------- a tiny run
def test_a_tiny_default_run_reports_and_keeps_library_chatter_out(tmp_path, capsys, monkeypatch):
    reached: list[logging.LogRecord] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reached.append(record)

    def setup_and_record(verbose: bool = False) -> None:
        real_setup(verbose)
        logging.getLogger().addHandler(Recorder())  # next to the terminal handler: sees what the terminal gets

    real_setup = cli.setup_logging
    monkeypatch.setattr(cli, "setup_logging", setup_and_record)
    config = _config(tmp_path, output_dir=str(tmp_path / "ignored"))
    run_dir = tmp_path / "run"
    rc = cli.main([str(config), "--output-dir", str(run_dir), "--base-model", str(MODEL),
                   "--set", "learning_rate=3e-4", "--set", "tensorboard=false"])
    assert rc == 0
    captured = capsys.readouterr()

    # the summary line: steps, the last logged loss, the run and model directories
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0]
    assert captured.out.splitlines() == [f"trained 1 steps; final loss {metrics[-1]['total']:.6g}; run directory "
                                         f"{run_dir}; model {run_dir / 'model'}"]
    assert (run_dir / "model" / "modules.json").is_file() and not (tmp_path / "ignored").exists()
    assert not (run_dir / "tensorboard").exists()
    # the overrides reached the run (command line over the file)
    saved = json.loads((run_dir / "train_config.json").read_text())
    assert (saved["learning_rate"], saved["output_dir"], saved["tensorboard"]) == (3e-4, str(run_dir), False)

    # jsplade's own progress reaches the terminal...
    progress = captured.err.replace("\r", "\n")
    assert re.search(r"training: 100%.*1/1", progress), captured.err
    # ...and no library INFO: neither as a record reaching the handlers nor as a line on the terminal
    chatter = [(r.name, r.levelname, r.getMessage()) for r in reached
               if r.name.split(".")[0] in LIBRARIES and r.levelno < logging.WARNING]
    assert chatter == []
    printed = (captured.out + "\n" + progress).splitlines()
    assert [line for line in printed if re.match(r"(INFO|DEBUG) ", line)] == []
    assert not [line for line in printed if "orbax" in line.lower() or "CheckpointManager" in line]
    assert list((run_dir / "checkpoints").iterdir())  # orbax did run (its INFO was held back, not skipped)


def test_rerunning_a_finished_run_and_run_errors_are_clean(tmp_path, capsys):
    """The same command again on a finished run resumes at its end (nothing trained, the model re-exported);
    errors found while training starts (another plan, resume off) are one line and exit code 2."""
    config = _config(tmp_path, tensorboard=False, progress_bar=False)
    assert cli.main([str(config)]) == 0
    first = (tmp_path / "run" / "model" / "query_0_SparseStaticEmbedding" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert cli.main([str(config)]) == 0
    assert (tmp_path / "run" / "model" / "query_0_SparseStaticEmbedding" / "model.safetensors").read_bytes() == first
    assert "trained 1 steps" in capsys.readouterr().out
    for extra, message in ((["--set", "max_steps=3"], "belongs to a run of 1 steps, this configuration plans 3"),
                           (["--set", "resume=false"], "already holds checkpoints")):
        assert cli.main([str(config), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("jsplade-train: error: ") and message in err and "Traceback" not in err
