"""The GTE MLM forward against the reference outputs of tests/fixtures/gte (new-impl NewForMaskedLM).

Weights are rebuilt by the recipe, written as safetensors and loaded through ``load_mlm``.
Tolerances (relative to the largest |value| of the reference array): tiny cases 1e-5, v3-gte size 1e-4;
the observed differences are ~5e-7 (tiny) and ~1e-6 (v3-gte), float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.fixtures import TINY_CASES, load_gte_case, max_rel, write_recipe_checkpoint

from jsplade import load_mlm
from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.gte import GteForMaskedLM
from jsplade.backbones.gte_config import v3_gte_config
from jsplade.backbones.layers import glu
from jsplade.backbones.layers.rope import rope_frequencies
from jsplade.backbones.params import count_parameters, flat_params
from jsplade.checkpoints.hf_folder import mlm_from_params
from jsplade.splade.fused_head import pool_from_features
from jsplade.splade.pooling import splade_pool

TINY_TOL = 1e-5
FULL_TOL = 1e-4


def _forward(model, inputs, **kw):
    tt = inputs.get("token_type_ids")
    fn = jax.jit(lambda ids, m, t: (model.encode(ids, m, t, **kw),))
    (hidden,) = fn(inputs["input_ids"], inputs["attention_mask"], tt)
    logits = jax.jit(lambda h: model.project(model.head_features(h)))(hidden)
    return np.asarray(hidden), np.asarray(logits)


@pytest.fixture(scope="module", params=TINY_CASES)
def tiny(request, tmp_path_factory):
    case = load_gte_case(request.param)
    folder = write_recipe_checkpoint(case, tmp_path_factory.mktemp(case.name))
    model = load_mlm(folder)
    hidden, logits = _forward(model, case.inputs)
    return case, model, hidden, logits


def test_tiny_logits_every_position(tiny):
    case, _, _, logits = tiny
    mask = case.inputs["attention_mask"].astype(bool)
    assert logits.shape == case.expected["logits"].shape
    assert max_rel(logits[mask], case.expected["logits"][mask]) < TINY_TOL
    # Pad positions are well defined on the padded path (pad queries attend to real keys).
    assert max_rel(logits, case.expected["logits"]) < TINY_TOL


def test_tiny_hidden_and_summaries(tiny):
    case, _, hidden, logits = tiny
    exp = case.expected
    mask = case.inputs["attention_mask"].astype(bool)
    assert max_rel(hidden, exp["last_hidden"]) < TINY_TOL
    pos = exp["positions"]
    rows = np.arange(len(pos))[:, None]
    assert max_rel(logits[rows, pos], exp["logits_at"]) < TINY_TOL
    assert max_rel(hidden[rows, pos], exp["hidden_at"]) < TINY_TOL
    assert max_rel(logits.max(-1), exp["logits_token_max"]) < TINY_TOL
    hidden64 = hidden.astype(np.float64)
    np.testing.assert_allclose(hidden64.sum(-1), exp["last_hidden_token_sum"], rtol=0, atol=1e-4)
    n_b = mask.sum(-1)
    sums = (hidden64 * mask[:, :, None]).sum((1, 2))
    assert np.all(np.abs(sums - exp["last_hidden_sum"]) <= 1e-6 * n_b * hidden.shape[-1])


def test_tiny_pooled(tiny):
    case, model, hidden, logits = tiny
    pooled = np.asarray(splade_pool(jnp.asarray(logits), case.inputs["attention_mask"]))
    assert max_rel(pooled, case.expected["pooled"]) < TINY_TOL
    # The chunked projection+pool path gives the same vectors (max is exact; chunk 7 forces many chunks).
    feats = model.head_features(jnp.asarray(hidden))
    chunked = pool_from_features(feats, model.decoder_weight(), model.head.decoder_bias[...],
                                 case.inputs["attention_mask"], chunk_size=7)
    np.testing.assert_allclose(np.asarray(chunked), pooled, rtol=1e-6, atol=1e-7)


def test_rope_frequencies_match_reference(tiny):
    case, model, _, _ = tiny
    np.testing.assert_allclose(rope_frequencies(model.config.rotary), case.expected["rope_inv_freq"], rtol=1e-6, atol=0)


def test_dropout_only_with_a_key(tiny):
    case, model, _, logits = tiny
    ids, mask = case.inputs["input_ids"], case.inputs["attention_mask"]
    tt = case.inputs.get("token_type_ids")
    key = jax.random.key(0)
    dropped = np.asarray(model(ids, mask, tt, dropout_key=key))
    again = np.asarray(model(ids, mask, tt, dropout_key=key))
    other = np.asarray(model(ids, mask, tt, dropout_key=jax.random.key(1)))
    assert case.config_json["hidden_dropout_prob"] > 0
    assert np.max(np.abs(dropped - logits)) > 1e-3  # dropout active in training
    np.testing.assert_array_equal(dropped, again)  # deterministic for a key
    assert np.max(np.abs(dropped - other)) > 1e-3
    # Zero dropout rates: a key changes nothing.
    cfg0 = model.config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    m0 = mlm_from_params(cfg0, {k: np.asarray(v) for k, v in flat_params(model).items()})
    np.testing.assert_array_equal(np.asarray(m0(ids, mask, tt, dropout_key=key)), np.asarray(m0(ids, mask, tt)))


def test_attention_impls_agree(tiny):
    case, model, hidden, _ = tiny
    model.with_compute(attention="chunked")
    try:
        import jsplade.backbones.layers.attention as att
        h2 = np.asarray(model.encode(case.inputs["input_ids"], case.inputs["attention_mask"],
                                     case.inputs.get("token_type_ids")))
    finally:
        model.with_compute(attention="auto")
    np.testing.assert_allclose(h2, hidden, rtol=0, atol=1e-5)
    assert att.ATTENTION_IMPLS


def _pooled_loss_and_grads(model, ids, mask, tt, key):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        m = nnx.merge(graphdef, p)
        logits = m(ids, mask, tt, dropout_key=key)
        return jnp.sum(splade_pool(logits, mask) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), jax.tree.leaves(grads)


def test_remat_same_values_and_gradients(tiny):
    """Per-layer remat (a scan over stacked layer weights) changes nothing: hidden states, and the loss and
    every parameter gradient with dropout active (each layer must get its own dropout key)."""
    case, model, hidden, _ = tiny
    ids, mask, tt = case.inputs["input_ids"], case.inputs["attention_mask"], case.inputs.get("token_type_ids")
    key = jax.random.key(3)
    plain_value, plain_grads = _pooled_loss_and_grads(model, ids, mask, tt, key)
    model.with_compute(remat=True)
    try:
        remat_hidden, _ = _forward(model, case.inputs)
        remat_value, remat_grads = _pooled_loss_and_grads(model, ids, mask, tt, key)
    finally:
        model.with_compute(remat=False)
    assert max_rel(remat_hidden, hidden) < TINY_TOL
    assert abs(remat_value - plain_value) <= TINY_TOL * abs(plain_value)
    assert len(remat_grads) == len(plain_grads)
    for g_remat, g_plain in zip(remat_grads, plain_grads):
        np.testing.assert_allclose(np.asarray(g_remat), np.asarray(g_plain), rtol=TINY_TOL,
                                   atol=TINY_TOL * float(np.max(np.abs(g_plain))))


def test_remat_keeping_attention_gives_same_gradients_without_recomputing_it():
    """``remat_keeps_attention``: the blockwise attention's output and statistics are saved per layer, so the
    backward pass recomputes each layer without re-running its attention forward loop (fewer exponentials
    in the differentiated program), and the gradients are those of the plain (no-remat) step."""

    cfg = v3_gte_config(vocab_size=512, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                        num_hidden_layers=3)
    rng = np.random.default_rng(5)
    ids = jnp.asarray(rng.integers(5, 512, (2, 300)), jnp.int32)
    mask = np.ones((2, 300), np.int32)
    mask[1, 210:] = 0
    cot = jnp.asarray(rng.standard_normal((2, 300, 64)), jnp.float32)  # (Σ h² is flat after a LayerNorm)
    grads, exp_count = {}, {}
    for name, opts in {"plain": dict(remat=False), "keep": dict(remat=True, remat_keeps_attention=True),
                       "full": dict(remat=True, remat_keeps_attention=False)}.items():
        model = GteForMaskedLM(cfg, compute=ComputeOptions(attention="blockwise", **opts), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(p, graphdef=graphdef):
            return jnp.sum(nnx.merge(graphdef, p).encode(ids, mask) * cot)

        exp_count[name] = str(jax.make_jaxpr(jax.grad(loss))(params)).count(" exp ")
        grads[name] = jax.tree.leaves(jax.jit(jax.grad(loss))(params))
    assert exp_count["keep"] < exp_count["full"], exp_count
    for name in ("keep", "full"):
        for g, g_plain in zip(grads[name], grads["plain"]):
            np.testing.assert_allclose(np.asarray(g), np.asarray(g_plain), rtol=TINY_TOL,
                                       atol=TINY_TOL * float(np.max(np.abs(g_plain))))


def test_remat_bounds_activation_memory():
    """Regression guard: XLA:CPU ignored unrolled ``jax.checkpoint`` layers (identical temporary memory with
    and without remat; an 8192-token v3-gte step needed 16 GB). With remat the compiled training step's
    temporary buffer must hold about one layer's activations, not all eight layers'."""

    cfg = v3_gte_config(vocab_size=512, hidden_size=64, num_attention_heads=4, intermediate_size=256,
                        num_hidden_layers=8)
    ids = jnp.ones((1, 2048), jnp.int32)
    temp = {}
    for remat in (False, True):
        model = GteForMaskedLM(cfg, compute=ComputeOptions(remat=remat, attention="chunked"))
        graphdef, params = nnx.split(model, nnx.Param)
        grad = jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p).encode(ids) ** 2)))
        temp[remat] = grad.lower(params).compile().memory_analysis().temp_size_in_bytes
    assert temp[True] < 0.4 * temp[False], temp


def test_logn_scale_cases_apply_scale():
    """The logn cases only pass if q is scaled by ln(n_b)/ln(max_pos) (clip1: at least 1)."""
    case = load_gte_case("tiny_logn_clip1")
    n_b = case.inputs["attention_mask"].sum(-1)
    ours = np.maximum(np.log(n_b.astype(np.float32)) / np.float32(np.log(32.0)), 1.0)
    np.testing.assert_allclose(ours, case.expected["logn_scale"], rtol=1e-6)


@pytest.mark.slow
def test_v3gte_short_full_size(tmp_path):
    case = load_gte_case("v3gte_short")
    model = load_mlm(write_recipe_checkpoint(case, tmp_path / "m"))
    assert count_parameters(model) == case.case["unique_parameter_count"] == 137_394_234
    hidden, logits = _forward(model, case.inputs)
    exp = case.expected
    mask = case.inputs["attention_mask"].astype(bool)
    pos = exp["positions"]
    rows = np.arange(len(pos))[:, None]
    assert max_rel(logits[rows, pos], exp["logits_at"]) < FULL_TOL
    assert max_rel(hidden[mask], exp["last_hidden"][mask]) < FULL_TOL
    assert max_rel(logits.max(-1)[mask], exp["logits_token_max"][mask]) < FULL_TOL
    pooled = np.asarray(splade_pool(jnp.asarray(logits), case.inputs["attention_mask"]))
    assert max_rel(pooled, exp["pooled"]) < FULL_TOL


@pytest.mark.slow
def test_v3gte_8192_tokens(tmp_path):
    """Long context: positions up to 8191 through the fast path — blockwise (flash) attention and the fused,
    tiled SPLADE head (the [1, 8192, 30522] logits are never built)."""
    case = load_gte_case("v3gte_2layer_8192")
    model = load_mlm(write_recipe_checkpoint(case, tmp_path / "m"), compute=ComputeOptions(attention="blockwise"))
    ids, mask = case.inputs["input_ids"], case.inputs["attention_mask"]
    exp = case.expected

    @jax.jit
    def run(ids, mask, pos):
        hidden = model.encode(ids, mask)
        feats = model.head_features(hidden)
        pooled = pool_from_features(feats, model.decoder_weight(), model.head.decoder_bias[...], mask)
        rows = jnp.arange(ids.shape[0])[:, None]
        return hidden[rows, pos], model.project(feats[rows, pos]), pooled

    hidden_at, logits_at, pooled = (np.asarray(x) for x in run(ids, mask, exp["positions"]))
    assert max_rel(logits_at, exp["logits_at"]) < FULL_TOL
    assert max_rel(hidden_at, exp["hidden_at"]) < FULL_TOL
    assert max_rel(pooled, exp["pooled"]) < FULL_TOL


def test_mlp_in_token_blocks_equals_the_whole_mlp(tiny):
    """Long inputs run each layer's MLP in token blocks (no dropout): same values and gradients as the
    whole-sequence MLP; with dropout the whole MLP runs (its mask is drawn over the full shape)."""
    case, model, _, _ = tiny
    ids = np.tile(np.asarray(case.inputs["input_ids"])[:, :8], (1, 5))  # 40 tokens
    mask = np.ones_like(ids)
    mask[-1, 33:] = 0

    def hidden(chunk):
        model.with_compute(mlp_chunk=chunk)
        return model.encode(ids, mask)

    try:
        blocks, whole = np.asarray(hidden(7)), np.asarray(hidden(None))  # 40 > 2·7: six blocks, last padded
        np.testing.assert_allclose(blocks, whole, rtol=1e-6, atol=1e-6)
    
        def loss(state, chunk):
            m = nnx.merge(nnx.graphdef(model), state)
            m.with_compute(mlp_chunk=chunk)
            return jnp.sum(m.encode(ids, mask) ** 2)

        state = nnx.state(model)
        g_blocks = jax.grad(loss)(state, 7)
        g_whole = jax.grad(loss)(state, None)
        for a, b in zip(jax.tree.leaves(g_blocks), jax.tree.leaves(g_whole)):
            assert max_rel(a, b) < 1e-5
        key = jax.random.key(3)
        model.with_compute(mlp_chunk=7)
        dropped_blocks = np.asarray(model.encode(ids, mask, dropout_key=key))
        model.with_compute(mlp_chunk=None)
        np.testing.assert_array_equal(dropped_blocks, np.asarray(model.encode(ids, mask, dropout_key=key)))
    finally:
        model.with_compute(mlp_chunk=1024)


def test_encoding_mlp_in_column_blocks_equals_the_whole_mlp(tiny, monkeypatch):
    """Encoding on CPUs runs the up/gate projection in blocks of intermediate columns (``MLP_COLUMN_BLOCK``,
    shrunk here so that tiny configs take that path, with a ragged last block): same hidden states as the
    whole MLP (the forms themselves: tests/backbones/layers/test_glu.py)."""
    case, model, hidden_whole, _ = tiny
    intermediate = model.layers[0].mlp.down_kernel.shape[0]
    block = max(1, intermediate // 3 - 1)
    monkeypatch.setattr(glu, "MLP_COLUMN_BLOCK", block)
    hidden_blocks, _ = _forward(model, case.inputs)
    np.testing.assert_allclose(hidden_blocks, hidden_whole, rtol=1e-6, atol=1e-6)


def test_cpu_scheduler_flag_bounds_long_document_memory():
    """README's advice for long documents on CPUs: XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false.
    XLA's temporaries for one 8192-token v3-gte document (12 layers, fused head; compiled from abstract
    shapes, nothing runs) must fall under half of the default's (measured: 224 MB against 836 MB)."""
    import os
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from flax import nnx
        from jsplade.backbones.gte_config import v3_gte_config
        from jsplade.splade.fused_head import fused_splade_pool
        from jsplade.backbones.gte import GteForMaskedLM
        graphdef, state = nnx.split(nnx.eval_shape(lambda: GteForMaskedLM(v3_gte_config(), rngs=nnx.Rngs(0))))
        def pooled(state, ids):
            m = nnx.merge(graphdef, state)
            f = m.head_features(m.encode(ids))
            return fused_splade_pool(f, m.decoder_weight(), m.head.decoder_bias[...], jnp.zeros(ids.shape, jnp.int32))
        ids = jax.ShapeDtypeStruct((1, 8192), jnp.int32)
        print(jax.jit(pooled).lower(state, ids).compile().memory_analysis().temp_size_in_bytes)
    """)
    temps = []
    for flags in ("", "--xla_cpu_enable_concurrency_optimized_scheduler=false"):
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        temps.append(int(out.stdout.strip().splitlines()[-1]))
    default, lean = temps
    assert lean < 0.5 * default, (lean / 2**20, default / 2**20)
    assert lean < 400 * 2**20


def _primitives(jaxpr, inside_cond=False, found=None):
    """(primitive name, inside a cond?) for every equation, recursing into sub-jaxprs."""
    found = set() if found is None else found
    for eqn in jaxpr.eqns:
        found.add((eqn.primitive.name, inside_cond))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr → Jaxpr
                if hasattr(sub, "eqns"):
                    _primitives(sub, inside_cond or eqn.primitive.name == "cond", found)
    return found


def test_model_forward_evaluates_no_cos_sin_with_default_positions():
    model = GteForMaskedLM(v3_gte_config(num_hidden_layers=1, hidden_size=64, num_attention_heads=4,
                                         intermediate_size=128, vocab_size=50), rngs=nnx.Rngs(0))
    ids = jnp.ones((2, 16), jnp.int32)
    plain = _primitives(jax.make_jaxpr(lambda i: model.encode(i))(ids).jaxpr)
    assert not {("cos", False), ("sin", False), ("cos", True), ("sin", True)} & plain
    # Given positions: cos/sin only in the fallback branch of the look-up.
    packed = _primitives(jax.make_jaxpr(lambda i, p: model.encode(i, position_ids=p))(ids, ids).jaxpr)
    assert ("cos", True) in packed and ("cos", False) not in packed and ("sin", False) not in packed


def test_hugging_face_keyword_call(tiny):
    """``mlm(input_ids=..., attention_mask=..., token_type_ids=..., position_ids=...)`` (Hugging Face's
    names) is the positional call, bit for bit; an unknown keyword is a TypeError naming it."""
    case, model, _, logits = tiny
    ids, mask = case.inputs["input_ids"], case.inputs["attention_mask"]
    types = case.inputs.get("token_type_ids")
    if types is None:
        types = np.zeros_like(ids)
    positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape)
    by_keyword = np.asarray(model(input_ids=ids, attention_mask=mask, token_type_ids=types, position_ids=positions))
    positional = np.asarray(model(ids, mask, types, positions))
    np.testing.assert_array_equal(by_keyword, positional)
    assert max_rel(by_keyword, case.expected["logits"]) < TINY_TOL
    hidden_kw = np.asarray(model.encode(input_ids=ids, attention_mask=mask, token_type_ids=types))
    np.testing.assert_array_equal(hidden_kw, np.asarray(model.encode(ids, mask, types)))
    with pytest.raises(TypeError, match="input_mask"):
        model(ids, input_mask=mask)
