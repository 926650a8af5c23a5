"""jsplade checkpoint directories (``orbax_dir``): the meta file, the template copy and the orbax steps.

Every save/restore round trip is compared bit for bit (the raw bytes of each array, so NaN payloads, -0.0,
infinities and subnormals count, and the dtype must survive): there is no arithmetic on the way, so the
tolerance is zero. Steps are listed against what was saved (keep-N, every-N, forced saves), crash safety is
checked by failing a real save part-way (nothing half-written is listed or restored, to this process or to a
fresh reader) and every documented error must name the directory or file it is about.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers.fixtures import SE_FIXTURES

from jsplade.checkpoints.orbax_dir import (FORMAT, META_FILE, STEPS_DIR, TEMPLATE_DIR, VERSION, CheckpointSteps,
                                           copy_template, is_checkpoint_dir, read_meta, to_numpy_flat, write_meta)


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mlm.layers.0.attention.qkv_kernel": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "mlm.head.decoder_bias": rng.standard_normal(11).astype(np.float32),
        "mlm.counts": rng.integers(-5, 5, 6).astype(np.int32),
        # values whose bits a lossy path would change
        "query.weight": np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38, 1.0 + 2 ** -23, seed],
                                 np.float32),
    }


def _assert_bitwise(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, want in expected.items():
        got = np.asarray(actual[key])
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert got.tobytes() == want.tobytes(), key


def _saved(run, steps, keep=None, **params_kw):
    ckpt = CheckpointSteps(run, keep=keep)
    for s in steps:
        assert ckpt.save(s, _params(s), progress={"step": s}, **params_kw)
    ckpt.close()


# ----------------------------------------------------------------------------- meta file
def test_meta_round_trip_sets_format_and_version(tmp_path):
    assert not is_checkpoint_dir(tmp_path)
    meta = {"config": {"vocab_size": 7, "nested": [1, 2.5, None]}, "prompts": {"query": "q: é"},
            "format": "something-else", "version": 99}  # caller's format/version are replaced
    write_meta(tmp_path, meta)
    assert is_checkpoint_dir(tmp_path)
    got = read_meta(tmp_path)
    assert got == {"format": FORMAT, "version": VERSION, "config": meta["config"], "prompts": meta["prompts"]}
    assert json.loads((tmp_path / META_FILE).read_text(encoding="utf-8")) == got
    assert os.listdir(tmp_path) == [META_FILE]  # no temporary left behind


def test_a_meta_write_that_fails_keeps_the_old_file(tmp_path):
    write_meta(tmp_path, {"a": 1})
    with pytest.raises(TypeError):
        write_meta(tmp_path, {"a": object()})
    assert read_meta(tmp_path)["a"] == 1
    assert os.listdir(tmp_path) == [META_FILE]


@pytest.mark.parametrize("text, exc, pattern", [
    (None, FileNotFoundError, r"not a jsplade checkpoint directory \(no jsplade_model.json\)"),
    ("{not json", ValueError, "malformed JSON"),
    ("[1, 2]", ValueError, r"not a jsplade-checkpoint file \(format=None\)"),
    ('{"format": "other", "version": 1}', ValueError, r"not a jsplade-checkpoint file \(format='other'\)"),
    ('{"format": "jsplade-checkpoint", "version": 2}', ValueError, r"unsupported jsplade-checkpoint version 2"),
    ('{"format": "jsplade-checkpoint"}', ValueError, r"unsupported jsplade-checkpoint version None"),
])
def test_bad_meta_files_are_refused_naming_the_file(tmp_path, text, exc, pattern):
    if text is not None:
        (tmp_path / META_FILE).write_text(text)
    with pytest.raises(exc, match=pattern) as info:
        read_meta(tmp_path)
    assert str(tmp_path / META_FILE) in str(info.value)


def test_is_checkpoint_dir_needs_the_meta_file_itself(tmp_path):
    (tmp_path / META_FILE).mkdir()
    assert not is_checkpoint_dir(tmp_path)
    assert not is_checkpoint_dir(tmp_path / "absent")


# ----------------------------------------------------------------------------- template
def test_copy_template_keeps_every_file_but_weights_and_code(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "__pycache__").mkdir(parents=True)
    (src / ".git").mkdir()
    keep = ["config.json", "tokenizer.json", "vocab.txt", "README.md", "sub/config.json", "sub/idf.json"]
    drop = ["model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin", "w.pt", "w.pth", "w.ckpt", "tf_model.h5", "flax_model.msgpack", "model.onnx",
            "modeling.py", "sub/weights.safetensors", "sub/__pycache__/x.pyc", ".git/HEAD"]
    for name in keep + drop:
        (src / name).write_text(name)
    run = tmp_path / "run"
    run.mkdir()
    dest = copy_template(src, run)
    assert dest == run / TEMPLATE_DIR
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == sorted(keep)
    for name in keep:
        assert (dest / name).read_text() == name
    # a second copy replaces the old template (no stale file survives)
    (dest / "stale.txt").write_text("old")
    copy_template(src, run)
    assert not (dest / "stale.txt").exists() and (dest / "vocab.txt").is_file()


def test_copy_template_of_the_fixture_model(tmp_path):
    dest = copy_template(SE_FIXTURES / "model", tmp_path)
    src_files = {str(p.relative_to(SE_FIXTURES / "model")) for p in (SE_FIXTURES / "model").rglob("*") if p.is_file()}
    got = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert got == {f for f in src_files if not f.endswith(".safetensors")}
    assert "query_0_SparseStaticEmbedding/tokenizer.json" in got and "idf.json" in got
    assert (dest / "modules.json").read_bytes() == (SE_FIXTURES / "model" / "modules.json").read_bytes()


# ----------------------------------------------------------------------------- steps: round trips
def test_save_and_restore_are_bit_exact(tmp_path):
    params = _params(3)
    params["mlm.bf16"] = np.asarray(jnp.asarray([1.5, -2.25, 3e-3], jnp.bfloat16))
    ckpt = CheckpointSteps(tmp_path, keep=None)
    assert ckpt.all_steps() == [] and ckpt.latest_step() is None
    assert ckpt.save(5, params, progress={"step": 5, "epoch": 0.25, "note": "é"})
    ckpt.wait()
    out = ckpt.restore()
    assert out["step"] == 5 and out["progress"] == {"step": 5, "epoch": 0.25, "note": "é"}
    assert "opt" not in out  # none was saved
    _assert_bitwise(to_numpy_flat(out["params"]), params)
    ckpt.close()
    # a fresh read-only reader sees the same
    again = CheckpointSteps(tmp_path, read_only=True)
    assert again.all_steps() == [5]
    _assert_bitwise(to_numpy_flat(again.restore(5)["params"]), params)


def test_jax_arrays_and_optimizer_state_round_trip(tmp_path):
    params = {k: jnp.asarray(v) for k, v in _params(1).items() if v.dtype == np.float32}
    opt = optax.adam(1e-3)
    state = opt.init(params)
    _, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)  # non-trivial moments and count
    ckpt = CheckpointSteps(tmp_path, keep=None)
    ckpt.save(2, params, opt_state=state)
    ckpt.wait()
    out = ckpt.restore(opt_target=state)
    assert "progress" not in out
    _assert_bitwise(to_numpy_flat(out["params"]), to_numpy_flat(params))
    assert jax.tree.structure(out["opt"]) == jax.tree.structure(state)  # the target's namedtuples come back
    for got, want in zip(jax.tree.leaves(out["opt"]), jax.tree.leaves(state)):
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    without = ckpt.restore(2, with_opt=False)
    assert set(without) == {"params", "step"}
    ckpt.close()


def test_async_save_is_complete_after_wait(tmp_path):
    ckpt = CheckpointSteps(tmp_path, keep=None, async_save=True)
    for s in (1, 2):
        assert ckpt.save(s, _params(s), progress={"step": s})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()
    reader = CheckpointSteps(tmp_path, read_only=True)
    for s in (1, 2):
        out = reader.restore(s)
        assert out["progress"] == {"step": s}
        _assert_bitwise(to_numpy_flat(out["params"]), _params(s))


def test_to_numpy_flat():
    flat = {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": np.int32(4), "c": [1.0, 2.0]}
    out = to_numpy_flat(flat)
    assert set(out) == {"a", "b", "c"} and all(isinstance(v, np.ndarray) for v in out.values())
    np.testing.assert_array_equal(out["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out["a"].dtype == np.float32 and out["b"].dtype == np.int32 and out["b"] == 4
    np.testing.assert_array_equal(out["c"], [1.0, 2.0])


# ----------------------------------------------------------------------------- steps: listing, keep-N, every-N
def test_keep_n_deletes_the_oldest_steps(tmp_path):
    _saved(tmp_path, [1, 2, 3, 4], keep=2)
    assert sorted(os.listdir(tmp_path / STEPS_DIR)) == ["3", "4"]
    reader = CheckpointSteps(tmp_path, read_only=True)
    assert reader.all_steps() == [3, 4] and reader.latest_step() == 4
    _assert_bitwise(to_numpy_flat(reader.restore()["params"]), _params(4))
    _assert_bitwise(to_numpy_flat(reader.restore(3)["params"]), _params(3))


def test_keep_none_keeps_everything_and_steps_list_in_order(tmp_path):
    ckpt = CheckpointSteps(tmp_path, keep=None)
    assert ckpt.save(10, _params(10), progress={"step": 10})
    assert not ckpt.save(7, _params(7))  # older than the latest: skipped unless forced
    assert ckpt.save(0, _params(0), progress={"step": 0}, force=True)
    ckpt.close()
    reader = CheckpointSteps(tmp_path, read_only=True)
    assert reader.all_steps() == [0, 10] and reader.latest_step() == 10
    assert reader.restore(0)["progress"] == {"step": 0}
    _assert_bitwise(to_numpy_flat(reader.restore()["params"]), _params(10))


def test_an_existing_step_is_never_overwritten(tmp_path):
    ckpt = CheckpointSteps(tmp_path, keep=None)
    ckpt.save(3, _params(3))
    ckpt.wait()
    with pytest.raises(ValueError, match="step 3 already exists"):
        ckpt.save(3, _params(4), force=True)
    ckpt.close()
    _assert_bitwise(to_numpy_flat(CheckpointSteps(tmp_path, read_only=True).restore(3)["params"]), _params(3))


def test_every_n_skips_steps_unless_forced(tmp_path):
    ckpt = CheckpointSteps(tmp_path, keep=None, every=3)
    saved = [ckpt.save(s, _params(s)) for s in range(8)]
    assert saved == [s % 3 == 0 for s in range(8)]
    assert ckpt.all_steps() == [0, 3, 6]
    assert ckpt.save(7, _params(7), force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [0, 3, 6, 7]
    _assert_bitwise(to_numpy_flat(ckpt.restore()["params"]), _params(7))
    ckpt.close()
    assert sorted(os.listdir(tmp_path / STEPS_DIR)) == ["0", "3", "6", "7"]


def test_every_below_one_means_every_step(tmp_path):
    ckpt = CheckpointSteps(tmp_path, keep=None, every=0)
    assert all(ckpt.save(s, _params(s)) for s in (1, 2, 3))
    ckpt.close()
    assert CheckpointSteps(tmp_path, read_only=True).all_steps() == [1, 2, 3]


def test_read_only_creates_and_writes_nothing(tmp_path):
    absent = tmp_path / "absent"
    reader = CheckpointSteps(absent, read_only=True)
    assert reader.all_steps() == [] and not absent.exists()
    _saved(tmp_path / "run", [1])
    reader = CheckpointSteps(tmp_path / "run", read_only=True)
    assert not reader.save(2, _params(2))
    assert reader.all_steps() == [1] and os.listdir(tmp_path / "run" / STEPS_DIR) == ["1"]


# ----------------------------------------------------------------------------- crash safety
def test_a_save_that_fails_part_way_leaves_no_visible_step(tmp_path):
    """The progress item cannot be written (not JSON), after the params item may already be on disk: the
    step must not be listed, not be restorable as latest, and no directory with the step's name exists."""
    ckpt = CheckpointSteps(tmp_path, keep=None)
    ckpt.save(1, _params(1), progress={"step": 1})
    ckpt.wait()
    with pytest.raises(TypeError, match="not JSON serializable"):
        ckpt.save(2, _params(2), progress={"bad": object()})
        ckpt.wait()
    assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
    assert "2" not in os.listdir(tmp_path / STEPS_DIR)
    reader = CheckpointSteps(tmp_path, read_only=True)
    assert reader.all_steps() == [1]
    out = reader.restore()
    assert out["step"] == 1
    _assert_bitwise(to_numpy_flat(out["params"]), _params(1))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 2 \(have \[1\]\)"):
        reader.restore(2)
    # the same step can be saved again afterwards, completely
    assert ckpt.save(2, _params(2), progress={"step": 2})
    ckpt.wait()
    ckpt.close()
    out = CheckpointSteps(tmp_path, read_only=True).restore()
    assert out["step"] == 2 and out["progress"] == {"step": 2}
    _assert_bitwise(to_numpy_flat(out["params"]), _params(2))


def test_unfinished_temporary_step_directories_are_ignored(tmp_path):
    """What a process killed mid-save leaves behind: orbax's temporary step directory."""
    _saved(tmp_path, [1])
    steps = tmp_path / STEPS_DIR
    os.rename(steps / "1", steps / "3.orbax-checkpoint-tmp-1234")
    _saved(tmp_path, [2])
    reader = CheckpointSteps(tmp_path, read_only=True)
    assert reader.all_steps() == [2] and reader.latest_step() == 2
    assert reader.restore()["step"] == 2


# ----------------------------------------------------------------------------- restore errors
def test_restore_errors_name_the_steps_directory(tmp_path):
    empty = CheckpointSteps(tmp_path / "empty", read_only=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint steps") as info:
        empty.restore()
    assert str((tmp_path / "empty" / STEPS_DIR).resolve()) in str(info.value)
    _saved(tmp_path / "run", [1, 4])
    reader = CheckpointSteps(tmp_path / "run", read_only=True)
    assert reader.dir == (tmp_path / "run" / STEPS_DIR).resolve()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3 \(have \[1, 4\]\)") as info:
        reader.restore(3)
    assert str(reader.dir) in str(info.value)
