"""Sharded training on CPU fake devices (8, set in conftest): results must not depend on the mesh.

Tolerance: 1e-5 relative (metrics per step; parameters relative to each tensor's largest |value|).
Observed ~1e-7–1e-6: sharded reductions only change the summation order.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from helpers.sharded_steps import AXES, host_params, run_steps, runner
from jsplade.training import sharding
from jsplade.checkpoints.orbax_dir import CheckpointSteps
from jsplade.training.trainer import pack_micro_batches, restore_state, save_state

TOL = 1e-5
MESHES = ["data=8", "data=2,fsdp=4", "data=2,fsdp=2,tensor=2"]


def _close(metrics_a, metrics_b, params_a, params_b):
    for a, b in zip(metrics_a, metrics_b):
        for k in ("base_loss", "document_regularizer_loss", "query_regularizer_loss", "total", "grad_norm"):
            assert abs(a[k] - b[k]) <= TOL * max(abs(a[k]), 1e-12), (k, a[k], b[k])
    assert set(params_a) == set(params_b)
    for k in params_a:
        scale = max(np.abs(params_a[k]).max(), 1e-12)
        assert np.abs(params_a[k] - params_b[k]).max() <= TOL * scale, k


@pytest.fixture(scope="module")
def single_device():
    state, fn, place, _ = runner(None)
    state, metrics = run_steps(state, fn, place, 0, 4)
    return metrics, host_params(state)


def test_mesh_spec_parsing():
    assert sharding.parse_mesh_spec("data=2,fsdp=2,tensor=2", 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.parse_mesh_spec("fsdp=-1,tensor=2", 8) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert sharding.parse_mesh_spec("auto", 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    for bad, msg in [("data=3", "needs 3 devices"), ("pipeline=8", "unknown axis"), ("data=2,data=4", "twice"),
                     ("data=x", "integer"), ("data=-1,fsdp=-1", "at most one"), ("data", "axis=size")]:
        with pytest.raises(ValueError, match=msg):
            sharding.parse_mesh_spec(bad, 8)


@pytest.mark.parametrize("mesh_spec", MESHES)
def test_steps_match_single_device(mesh_spec, single_device):
    ref_metrics, ref_params = single_device
    state, fn, place, _ = runner(mesh_spec)
    state, metrics = run_steps(state, fn, place, 0, 4)
    _close(ref_metrics, metrics, ref_params, host_params(state))


def test_an_asymmetric_model_on_a_mesh_matches_single_device():
    """A query MLM of its own (``query_mlm.*``, sharded by the backbone's rules like ``mlm.*``): three steps on
    a 2×2×2 mesh against three on one device. Looser than the inference-free test, for a measured reason:
    MLM query vectors are dense, so every score is a sum over 30,522 dimensions whose order differs when the
    vocabulary is split over ``tensor`` (inference-free queries have ≤ 8 non-zeros: exact in any order).
    Measured: loss terms and grad norm ≤ 1.5e-5 relative; parameters ≤ 1.3e-4 of the tensor's largest entry
    (AdamW's first updates turn the float noise in near-zero gradients into lr-sized steps). A missing
    gradient reduction or a wrong sharding moves them by orders of magnitude more."""
    state, fn, place, _ = runner(None, shape="asymmetric")
    state, ref_metrics = run_steps(state, fn, place, 0, 3)
    ref_params = host_params(state)
    assert any(k.startswith("query_mlm.") for k in ref_params) and "query.weight" not in ref_params
    state, fn, place, mesh = runner("data=2,fsdp=2,tensor=2", shape="asymmetric")
    word = state["params"]["query_mlm"]["embeddings"]["word"]["embedding"]
    assert word.sharding.spec == state["params"]["mlm"]["embeddings"]["word"]["embedding"].sharding.spec
    state, metrics = run_steps(state, fn, place, 0, 3)
    for a, b in zip(ref_metrics, metrics):
        for k in ("base_loss", "document_regularizer_loss", "query_regularizer_loss", "total", "grad_norm"):
            assert abs(a[k] - b[k]) <= 3e-5 * max(abs(a[k]), 1e-12), (k, a[k], b[k])
    got = host_params(state)
    assert set(got) == set(ref_params)
    for k, v in ref_params.items():
        assert np.abs(got[k] - v).max() <= 3e-4 * np.abs(v).max(), k


def test_remat_on_a_mesh_matches_single_device(single_device):
    """Per-layer remat stacks the (fsdp/tensor-sharded) layer weights inside the step: same result."""
    ref_metrics, ref_params = single_device
    state, fn, place, _ = runner("data=2,fsdp=2,tensor=2", remat=True)
    state, metrics = run_steps(state, fn, place, 0, 4)
    _close(ref_metrics, metrics, ref_params, host_params(state))


def test_parameter_shardings_follow_the_rules():
    state, _, _, mesh = runner("data=2,fsdp=2,tensor=2")
    layer = state["params"]["mlm"]["layers"][0]
    specs = {
        "qkv_kernel": (layer["attention"]["qkv_kernel"], P("fsdp", None, "tensor", None)),
        "out_kernel": (layer["attention"]["out_kernel"], P("tensor", None, "fsdp")),
        "up_gate": (layer["mlp"]["up_gate_kernel"], P("fsdp", None, "tensor")),
        "down": (layer["mlp"]["down_kernel"], P("tensor", "fsdp")),
        "word": (state["params"]["mlm"]["embeddings"]["word"]["embedding"], P("tensor", "fsdp")),
        "query": (state["params"]["query"]["weight"], P("tensor")),
        "norm": (layer["attn_norm"]["scale"], P(None)),
    }
    for name, (var, spec) in specs.items():
        arr = var.get_value()
        assert arr.sharding.spec == spec, (name, arr.sharding.spec)
        assert arr.sharding.mesh.shape == mesh.shape
        # and the declared rule is what partition_spec computes from the table
        assert sharding.partition_spec(
            {"qkv_kernel": "mlm.layers.0.attention.qkv_kernel", "out_kernel": "mlm.layers.0.attention.out_kernel",
             "up_gate": "mlm.layers.0.mlp.up_gate_kernel", "down": "mlm.layers.0.mlp.down_kernel",
             "word": "mlm.embeddings.word.embedding", "query": "query.weight",
             "norm": "mlm.layers.0.attn_norm.scale"}[name], arr.shape, mesh, AXES) == spec
    # Adam moments are sharded like their parameters.
    mu = [leaf for leaf in jax.tree.leaves(state["opt"]) if leaf.shape == layer["attention"]["qkv_kernel"].get_value().shape]
    assert mu and all(m.sharding.spec == P("fsdp", None, "tensor", None) for m in mu)
    # A dimension the axis does not divide stays replicated.
    assert sharding.partition_spec("mlm.embeddings.word.embedding", (30521, 32), mesh, AXES) == P(None, "fsdp")


def test_save_on_one_mesh_restore_on_another(tmp_path, single_device):
    ref_metrics, ref_params = single_device
    state, fn, place, _ = runner("data=2,fsdp=2,tensor=2")
    state, first = run_steps(state, fn, place, 0, 2)
    ckpt = CheckpointSteps(tmp_path)
    save_state(ckpt, state, 2, total_steps=4)
    ckpt.wait()
    template, fn2, place2, mesh2 = runner("data=8")
    restored, step = restore_state(CheckpointSteps(tmp_path), template, total_steps=4, mesh=mesh2)
    assert step == 2 and int(restored["step"]) == 2
    assert restored["params"]["mlm"]["layers"][0]["attention"]["qkv_kernel"].get_value().sharding.mesh.shape == mesh2.shape
    restored, rest = run_steps(restored, fn2, place2, 2, 4)
    _close(ref_metrics, first + rest, ref_params, host_params(restored))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, single_device):
    """Two processes × four CPU devices (jax.distributed on localhost) = one process, same mesh shape."""
    ref_metrics, _ = single_device
    state, fn, place, _ = runner("data=2,fsdp=2,tensor=2")
    state, _ = run_steps(state, fn, place, 0, 3)
    ref_params = host_params(state)
    port = _free_port()
    out = tmp_path / "params.npz"
    worker = Path(__file__).resolve().parents[1] / "helpers" / "multihost_worker.py"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(worker), str(i), str(port), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=400)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two-process run did not finish within 400 s")
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
    with np.load(out) as f:
        got = {k: f[k] for k in f.files}
    for i in range(3):
        assert abs(float(got[f"metric.{i}.total"]) - ref_metrics[i]["total"]) <= TOL * abs(ref_metrics[i]["total"])
    for k, v in ref_params.items():
        assert np.abs(got[k] - v).max() <= TOL * max(np.abs(v).max(), 1e-12), k


def _packed(batch, row_multiple):
    """The padded test batch re-laid as packed rows (``pack_micro_batches``), same documents."""
    ids, mask = batch["doc_ids"][0], batch["doc_mask"][0]
    cols = [[ids[c, b][mask[c, b] == 1] for b in range(ids.shape[1])] for c in range(ids.shape[0])]
    out = {k: batch[k] for k in ("query_ids", "query_mask")}
    out.update(pack_micro_batches([cols], 128, row_multiple))
    return out


def test_packed_batches_shard_like_padded_ones():
    from helpers.sharded_steps import make_batch

    results = []
    for mesh_spec in (None, "data=2,fsdp=2,tensor=2"):
        state, fn, place, mesh = runner(mesh_spec, packed=True)
        metrics = []
        for s in range(2):
            packed = _packed(make_batch(s), 1 if mesh is None else sharding.batch_divisor(mesh))
            assert packed["pack_ids"].shape[1] < 16  # 16 documents in fewer rows
            state, m = fn(state, place(packed))
            metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
        results.append((metrics, host_params(state)))
    _close(results[0][0], results[1][0], results[0][1], results[1][1])
