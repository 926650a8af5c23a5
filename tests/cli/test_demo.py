"""jsplade-demo (jsplade.cli.demo): --help, bad arguments as exit code 2 with a message, and how the options
become the DemoSettings handed to jsplade.limit.demo.run_demo (replaced here by a recorder, so nothing is
trained; tests/limit/test_demo.py runs the real quick demo)."""

from __future__ import annotations

import logging

import pytest

from jsplade.cli import demo as cli
from jsplade.limit import demo as library
from jsplade.limit.demo import DemoSettings


@pytest.fixture
def recorded(monkeypatch) -> list[DemoSettings]:
    """run_demo and report replaced: the settings main() passes, and a marker report."""
    calls: list[DemoSettings] = []

    def fake_run_demo(settings: DemoSettings) -> dict:
        calls.append(settings)
        return {"marker": len(calls)}

    monkeypatch.setattr(library, "run_demo", fake_run_demo)
    monkeypatch.setattr(library, "report", lambda results: f"REPORT {results['marker']}")
    return calls


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jsplade-demo")
    for option in ("--out", "--quick", "--steps", "--no-limit", "-v, --verbose"):
        assert option in out, option
    assert "LIMIT-small" in out  # the module docstring is the description


@pytest.mark.parametrize("argv, message", [
    (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["--steps", "2.5"], "argument --steps: invalid int value: '2.5'"),
    (["--steps"], "argument --steps: expected one argument"),
    (["--fast"], "unrecognized arguments: --fast"),
    (["runs/x"], "unrecognized arguments: runs/x"),
])
def test_bad_arguments_exit_2_with_usage(argv, message, capsys, recorded):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: jsplade-demo" in err and f"jsplade-demo: error: {message}" in err
    assert recorded == []


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_steps_below_one_is_refused_before_running(steps, capsys, recorded, tmp_path):
    assert cli.main(["--steps", steps, "--out", str(tmp_path / "demo")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "jsplade-demo: error: --steps must be >= 1"
    assert "Traceback" not in captured.err and captured.out == ""
    assert recorded == [] and not (tmp_path / "demo").exists()


def test_default_options_run_the_full_demo_settings(capsys, recorded, tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["--out", str(out)]) == 0
    (settings,) = recorded
    assert settings == DemoSettings(out_dir=str(out))  # the library's defaults, only the folder changed
    printed = capsys.readouterr().out
    assert printed.startswith(f"jsplade demo: training a {settings.layers}-layer, hidden-{settings.hidden_size} GTE "
                              f"sparse encoder from scratch ({settings.steps} steps, batch {settings.batch_size})")
    assert "\nREPORT 1\n" in printed
    assert f"results: {out}/results.json" in printed and f"plot: {out}/recall_at_k.png" in printed
    assert f"model: {out}/model" in printed


def test_quick_steps_and_no_limit_reach_the_settings(capsys, recorded, tmp_path):
    assert cli.main(["--quick", "--out", str(tmp_path / "q")]) == 0
    assert cli.main(["--quick", "--steps", "3", "--out", str(tmp_path / "q3")]) == 0
    assert cli.main(["--steps", "5", "--no-limit", "--out", str(tmp_path / "n")]) == 0
    quick, quick3, no_limit = recorded
    assert quick == DemoSettings.quick_settings(str(tmp_path / "q"))
    expected = DemoSettings.quick_settings(str(tmp_path / "q3"))
    expected.steps = 3
    assert quick3 == expected
    assert (no_limit.steps, no_limit.with_limit, no_limit.quick) == (5, False, False)
    assert no_limit.hidden_size == DemoSettings().hidden_size  # the full-size model, only shortened
    printed = capsys.readouterr().out
    assert f"({quick.steps} steps, batch {quick.batch_size})" in printed and "(3 steps," in printed
    assert "(5 steps," in printed


def test_verbose_flag_sets_up_logging(capsys, recorded, tmp_path):
    assert cli.main(["--out", str(tmp_path / "a")]) == 0
    assert logging.getLogger().level == logging.WARNING and logging.getLogger("jsplade").level == logging.INFO
    assert cli.main(["-v", "--out", str(tmp_path / "b")]) == 0
    assert logging.getLogger().level == logging.INFO
    assert len(recorded) == 2
    capsys.readouterr()
