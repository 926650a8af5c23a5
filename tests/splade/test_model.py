"""SpladeModel (``jsplade.splade.model``) is the composition of its parts, on the fixture model (V = 30522):

* documents: the backbone's own MLM logits (``mlm(ids, mask)``) pooled by a numpy SPLADE formula written here
  (max / sum over unmasked tokens of log1p(relu(x)) or log1p(log1p(relu(x))), float64); the plain head must
  also equal ``splade_pool`` of those logits bit for bit (same operations);
* queries: presence × the static weight (exact);
* the parameter tree: ``query.weight`` + the backbone's parameters under ``mlm.``, with the same names as the
  checkpoint's flat parameters, and ``logical_axes`` giving every parameter a rule of its rank.

Tolerance of documents against the numpy formula: rtol 1e-6 plus atol 1e-6 × the largest value (float32
rounding of log1p in XLA vs numpy, and the fused head blocks the vocabulary matmul differently).
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.fixtures import SE_FIXTURES

from jsplade.backbones.params import flat_params, path_str
from jsplade.backbones.registry import backbone_of
from jsplade.checkpoints.parts import read_sparse_encoder
from jsplade.splade.model import QUERY_LOGICAL_AXES, SpladeModel
from jsplade.splade.pooling import splade_pool
from jsplade.splade.static_embedding import StaticQueryEmbedding, query_presence

RTOL = 1e-6
CASES = [(s, a) for s in ("max", "sum") for a in ("relu", "log1p_relu")]


def _reference_pool(logits: np.ndarray, mask: np.ndarray, strategy: str, activation: str) -> np.ndarray:
    out = np.zeros((logits.shape[0], logits.shape[2]), np.float64)
    for b in range(logits.shape[0]):
        x = np.maximum(logits[b][mask[b] != 0].astype(np.float64), 0.0)
        act = np.log1p(np.log1p(x)) if activation == "log1p_relu" else np.log1p(x)
        out[b] = act.max(0) if strategy == "max" else act.sum(0)
    return out


def _assert_close(actual, expected) -> None:
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


@pytest.fixture(scope="module")
def parts():
    return read_sparse_encoder(SE_FIXTURES / "model")


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (3, 20)).astype(np.int32)
    ids[:, 0], ids[0, -1] = 101, 102
    mask = np.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module")
def logits(parts, batch):
    ids, mask = batch
    out = np.asarray(parts.mlm(ids, mask))
    assert out.shape == (3, 20, 30522) and out.dtype == np.float32
    return out


@pytest.fixture
def model(parts):
    parts.mlm.with_compute(head="fused")
    yield SpladeModel(parts.mlm, StaticQueryEmbedding(parts.query_weights), parts.pooling_strategy, parts.activation)
    parts.mlm.with_compute(head="fused")


# ----------------------------------------------------------------------------- documents
def test_plain_head_is_mlm_logits_then_pooling(model, batch, logits):
    ids, mask = batch
    model.mlm.with_compute(head="plain")
    got = np.asarray(model.encode_documents(ids, mask))
    assert got.shape == (3, 30522) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.asarray(splade_pool(jnp.asarray(logits), mask, "max", "log1p_relu")))
    _assert_close(got, _reference_pool(logits, mask, "max", "log1p_relu"))
    assert (got > 0).sum() > 1000  # a non-trivial vector (the random fixture model is nearly dense)


@pytest.mark.parametrize("strategy, activation", CASES)
def test_fused_head_equals_the_composition(parts, model, batch, logits, strategy, activation):
    ids, mask = batch
    m = SpladeModel(parts.mlm, model.query, strategy, activation)
    assert parts.mlm.compute.head == "fused"
    got = np.asarray(m.encode_documents(ids, mask))
    _assert_close(got, _reference_pool(logits, mask, strategy, activation))


# ----------------------------------------------------------------------------- queries
def test_queries_are_presence_times_the_static_weight(model, parts):
    ids = np.array([[2023, 2003, 2003, 1037, 0], [100, 7592, 0, 0, 0]], np.int32)
    mask = (ids != 0).astype(np.int32)
    presence = query_presence(ids, mask, model.vocab_size)
    got = np.asarray(model.encode_queries(presence))
    want = np.zeros((2, 30522), np.float32)
    for b in range(2):
        kept = ids[b][mask[b] != 0]
        want[b, kept] = parts.query_weights[kept]
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(got[0]) == 3 and got[1, 100] == parts.query_weights[100]


# ----------------------------------------------------------------------------- parameters
def test_parameter_paths_are_the_checkpoint_names(model, parts):
    paths = {path_str(p): v.get_value().shape for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    flat = parts.flat_params()
    assert set(paths) == set(flat)
    assert set(paths) == {"query.weight"} | {"mlm." + k for k in flat_params(parts.mlm)}
    for name, shape in paths.items():
        assert tuple(shape) == flat[name].shape, name
    assert model.vocab_size == 30522 == model.query.vocab_size


def test_logical_axes_cover_every_parameter(model):
    table = model.logical_axes()
    assert table[: len(QUERY_LOGICAL_AXES)] == QUERY_LOGICAL_AXES
    backbone = backbone_of(model.mlm).logical_axes
    assert len(table) == len(QUERY_LOGICAL_AXES) + len(backbone)

    def first(rows, path):
        return next((axes for pattern, axes in rows if re.search(pattern, path)), None)

    for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        path, ndim = path_str(p), var.get_value().ndim
        axes = first(table, path)
        assert axes is not None and len(axes) == ndim, (path, axes, ndim)
        if path.startswith("mlm."):
            assert axes == first(backbone, path[len("mlm."):]), path  # the backbone's own rule, unchanged
    assert first(table, "query.weight") == ("vocab",)
    assert first(table, "mlm.embeddings.word.embedding") == ("vocab", "embed")
    # every rule is anchored: nothing outside mlm.* / query.weight matches
    for stray in ("embeddings.word.embedding", "xmlm.head.decoder_bias", "other.query.weight", "query.weight2"):
        assert first(table, stray) is None, stray


# ----------------------------------------------------------------------------- bad input
def test_bad_pooling_options_and_vocabulary_mismatch(parts):
    query = StaticQueryEmbedding(parts.query_weights)
    with pytest.raises(ValueError, match=r"pooling_strategy must be one of \('max', 'sum'\), got 'mean'"):
        SpladeModel(parts.mlm, query, "mean")
    with pytest.raises(ValueError, match=r"activation_function must be one of .*got 'gelu'"):
        SpladeModel(parts.mlm, query, "max", "gelu")
    with pytest.raises(ValueError, match="static query weight has 30521 entries but the document model's "
                                         "vocab_size is 30522"):
        SpladeModel(parts.mlm, StaticQueryEmbedding(parts.query_weights[:-1]))
    default = SpladeModel(parts.mlm, query)
    assert (default.pooling_strategy, default.activation) == ("max", "log1p_relu")


# ----------------------------------------------------------------------------- asymmetric (an MLM on each route)
def _second_mlm(parts, seed: int = 1):
    """Another GTE model of the fixture's config with perturbed weights (a separate query MLM)."""
    from jsplade.backbones.params import build_with_params

    rng = np.random.default_rng(seed)
    values = {k: np.asarray(v) + rng.normal(0, 0.01, np.shape(v)).astype(np.float32)
              for k, v in flat_params(parts.mlm).items()}
    return build_with_params(lambda: backbone_of(parts.mlm).new_model(parts.mlm.config), values)


def test_asymmetric_queries_use_their_own_mlm_and_pooling(parts, batch):
    """``encode_query_tokens`` = the query MLM's logits pooled with the query route's pooling; documents
    keep the document MLM and pooling; parameters live under ``mlm.*`` and ``query_mlm.*``, each with the
    backbone's own logical-axis rule."""
    ids, mask = batch
    query_mlm = _second_mlm(parts)
    model = SpladeModel(parts.mlm, None, "max", "log1p_relu", query_mlm=query_mlm, query_pooling_strategy="sum",
                        query_activation="relu")
    assert (model.shape, model.inference_free) == ("asymmetric", False)
    _assert_close(model.encode_query_tokens(ids, mask),
                  _reference_pool(np.asarray(query_mlm(ids, mask)), mask, "sum", "relu"))
    _assert_close(model.encode_documents(ids, mask),
                  _reference_pool(np.asarray(parts.mlm(ids, mask)), mask, "max", "log1p_relu"))
    paths = {path_str(p): v.get_value().ndim for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    mlm_names = set(flat_params(parts.mlm))
    assert set(paths) == {"mlm." + k for k in mlm_names} | {"query_mlm." + k for k in mlm_names}
    table = model.logical_axes()
    backbone = backbone_of(parts.mlm).logical_axes

    def first(rows, path):
        return next((axes for pattern, axes in rows if re.search(pattern, path)), None)

    for path, ndim in paths.items():
        inner = path.split(".", 1)[1]
        assert first(table, path) == first(backbone, inner) and len(first(table, path)) == ndim, path
    assert first(table, "query.weight") is None
    with pytest.raises(ValueError, match="use encode_queries"):
        SpladeModel(parts.mlm, StaticQueryEmbedding(parts.query_weights)).encode_query_tokens(ids, mask)
    with pytest.raises(ValueError, match="an asymmetric model has no static query weights"):
        model.encode_queries(np.zeros((1, 30522), np.float32))


def test_symmetric_queries_go_through_the_document_mlm(parts, batch):
    ids, mask = batch
    model = SpladeModel(parts.mlm, None, "max", "log1p_relu")
    assert model.shape == "symmetric"
    np.testing.assert_array_equal(np.asarray(model.encode_query_tokens(ids, mask)),
                                  np.asarray(model.encode_documents(ids, mask)))


def test_bad_query_route_arguments(parts):
    query = StaticQueryEmbedding(parts.query_weights)
    with pytest.raises(ValueError, match="not both"):
        SpladeModel(parts.mlm, query, query_mlm=parts.mlm)
    with pytest.raises(ValueError, match="apply only with a query MLM"):
        SpladeModel(parts.mlm, None, query_activation="relu")
    with pytest.raises(ValueError, match=r"activation_function must be one of .*got 'gelu'"):
        SpladeModel(parts.mlm, None, query_mlm=parts.mlm, query_activation="gelu")
    with pytest.raises(TypeError):
        SpladeModel(parts.mlm, None, query_mlm=object())
