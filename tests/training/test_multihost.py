"""Host collectives of ``jsplade.training.multihost`` on one process (the identity, and ``agree``'s error
rule), plus the per-process batch helpers they serve. Their two-process behaviour is exercised end to end by
``test_trainer_multihost.py``."""

from __future__ import annotations

import numpy as np
import pytest

from jsplade.training import multihost, sharding
from jsplade.training.trainer import pad_batch


def test_allgather_ints_on_one_process_adds_the_process_axis():
    out = multihost.allgather_ints([[3, 4], [5, 6]])
    assert out.shape == (1, 2, 2) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0], [[3, 4], [5, 6]])


def test_allgather_json_on_one_process_round_trips():
    obj = {"b": [1, 2, {"c": "é"}], "a": None}
    assert multihost.allgather_json(obj) == [obj]


def test_agree_returns_every_process_values_when_all_succeed():
    np.testing.assert_array_equal(multihost.agree(True, [7, 9], "testing"), [[7, 9]])


def test_agree_leaves_the_raising_to_the_failing_process():
    # the failing process itself is told nothing (it re-raises its own error); with P = 1 nobody else is
    np.testing.assert_array_equal(multihost.agree(False, [0, 0], "testing"), [[0, 0]])


def test_agree_names_the_failed_peers(monkeypatch):
    def fake_gather(values):  # process 1 of 3 failed
        v = np.asarray(values, np.int64)
        rows = np.stack([v, v, v])
        rows[1, 0] = 0
        return rows

    monkeypatch.setattr(multihost, "allgather_ints", fake_gather)
    with pytest.raises(multihost.PeerFailed, match=r"process\(es\) \[1\] of 3 failed while reading step 4"):
        multihost.agree(True, [1, 2], "reading step 4")
    assert issubclass(multihost.PeerFailed, RuntimeError)


def _batch(lq, ld, b=2, cols=2):
    rng = np.random.default_rng(lq * 10 + ld)
    return {"query_ids": rng.integers(1, 99, (1, b, lq)).astype(np.int32), "query_mask": np.ones((1, b, lq), np.int32),
            "doc_ids": rng.integers(1, 99, (1, cols, b, ld)).astype(np.int32),
            "doc_mask": np.ones((1, cols, b, ld), np.int32)}


def test_pad_batch_zero_pads_the_token_axes_only():
    batch = _batch(3, 5)
    out = pad_batch(batch, 6, 5)
    assert out["query_ids"].shape == (1, 2, 6) and out["doc_ids"].shape == (1, 2, 2, 5)
    np.testing.assert_array_equal(out["query_ids"][..., :3], batch["query_ids"])
    assert not out["query_ids"][..., 3:].any() and not out["query_mask"][..., 3:].any()
    assert out["doc_ids"] is batch["doc_ids"]  # already that long: untouched
    with pytest.raises(ValueError, match="doc_ids is 5 tokens long, longer than 4"):
        pad_batch(batch, 6, 4)


def test_process_local_batch_on_one_process_is_the_host_batch():
    mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
    batch = _batch(4, 6, b=8)
    placed = sharding.global_batch_from_process_local(batch, mesh)
    reference = sharding.global_batch_from_host(batch, mesh)
    for k in batch:
        np.testing.assert_array_equal(np.asarray(placed[k]), batch[k])
        assert placed[k].sharding.is_equivalent_to(reference[k].sharding, batch[k].ndim)
    with pytest.raises(ValueError, match="padded, not packed"):
        sharding.global_batch_from_process_local({**batch, "pack_ids": batch["doc_ids"]}, mesh)
