"""SpladeLoss terms (jsplade.training.losses) against an independent float64 NumPy implementation, plus gradients.

Tolerances: float32 JAX vs float64 NumPy values 1e-6 relative; float64 JAX gradients vs central finite
differences (step 1e-6) 1e-6 relative to the largest gradient entry; the closed forms of §5.3 1e-6
relative (float32). Zero loss / zero gradient for B = 1, K = 0 is checked exactly (== 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsplade.training.losses import flops_loss, sparse_mnrl_loss, splade_loss

V = 40


def x64():
    """Context enabling float64 in JAX (jax.enable_x64 in jax >= 0.9, jax.experimental before)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # pragma: no cover - older jax

    return enable_x64()


# ----------------------------------------------------------------------------- float64 references
def np_rank_loss(q, docs, scale=1.0):
    q = np.asarray(q, np.float64)
    docs = np.asarray(docs, np.float64)
    b = q.shape[0]
    s = scale * (q @ docs.T)
    losses = []
    for i in range(b):
        row = s[i]
        m = row.max()
        losses.append(m + np.log(np.exp(row - m).sum()) - row[i])
    return float(np.mean(losses))


def np_flops(e, threshold=None, idf=None):
    e = np.array(e, np.float64)
    n = e.shape[0]
    if threshold is not None:
        for i in range(n):
            if np.count_nonzero(e[i]) <= threshold:
                e[i] = 0.0
    col = e.sum(axis=0) / n
    if idf is not None:
        col = col * np.asarray(idf, np.float64)
    return float((col ** 2).sum())


def rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-30)


# ----------------------------------------------------------------------------- random embeddings
def sparse_docs(rng, n, v=V, density=0.3):
    """Non-negative sparse rows like SPLADE document vectors."""
    vals = np.log1p(np.log1p(rng.exponential(1.0, (n, v))))
    return (vals * (rng.random((n, v)) < density)).astype(np.float32)


def presence(rng, b, v=V, k=5):
    p = np.zeros((b, v), np.float32)
    for i in range(b):
        p[i, rng.choice(v, size=k, replace=False)] = 1.0
    return p


def queries(rng, b, v=V):
    w = rng.uniform(0.2, 2.0, v).astype(np.float32)
    return presence(rng, b, v) * w


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("b,k,scale", [(4, 0, 1.0), (3, 1, 1.0), (5, 2, 1.0), (4, 1, 20.0), (1, 2, 1.0)])
def test_rank_loss_matches_numpy(b, k, scale):
    rng = np.random.default_rng(100 + 10 * b + k)
    q = queries(rng, b)
    docs = sparse_docs(rng, (1 + k) * b)
    got = sparse_mnrl_loss(jnp.asarray(q), jnp.asarray(docs), scale)
    assert got.dtype == jnp.float32
    assert rel(got, np_rank_loss(q, docs, scale)) < 1e-6


def test_rank_loss_stable_for_large_scores():
    rng = np.random.default_rng(1)
    q = queries(rng, 3) * 300.0
    docs = sparse_docs(rng, 6) * 300.0
    got = float(sparse_mnrl_loss(q, docs))
    assert np.isfinite(got)
    assert rel(got, np_rank_loss(q, docs)) < 1e-6


def test_target_is_row_i_not_any_positive():
    """Swapping two positive rows changes the loss (targets are the diagonal of the first B columns)."""
    rng = np.random.default_rng(2)
    q = queries(rng, 3)
    docs = sparse_docs(rng, 6)
    swapped = docs.copy()
    swapped[[0, 1]] = docs[[1, 0]]
    assert rel(sparse_mnrl_loss(q, swapped), np_rank_loss(q, swapped)) < 1e-6
    assert abs(float(sparse_mnrl_loss(q, swapped)) - float(sparse_mnrl_loss(q, docs))) > 1e-3


def test_single_pair_is_exactly_zero_with_zero_gradient():
    rng = np.random.default_rng(3)
    q = jnp.asarray(queries(rng, 1))
    d = jnp.asarray(sparse_docs(rng, 1, density=0.9))
    assert float(jnp.dot(q[0], d[0])) > 0  # a non-trivial score
    value, (gq, gd) = jax.value_and_grad(sparse_mnrl_loss, argnums=(0, 1))(q, d)
    assert float(value) == 0.0
    assert not np.any(np.asarray(gq)) and not np.any(np.asarray(gd))
    terms = splade_loss(q, [d], 3e-5, 5e-5)
    assert float(terms["base_loss"]) == 0.0
    # With B = 1 the regularizers are λ_d‖d‖² and λ_q‖q‖² (§5.3).
    assert rel(terms["document_regularizer_loss"], 3e-5 * np.sum(np.float64(d) ** 2)) < 1e-6
    assert rel(terms["query_regularizer_loss"], 5e-5 * np.sum(np.float64(q) ** 2)) < 1e-6


@pytest.mark.parametrize("n", [1, 4, 9])
def test_flops_matches_numpy(n):
    rng = np.random.default_rng(10 + n)
    e = sparse_docs(rng, n)
    assert rel(flops_loss(e), np_flops(e)) < 1e-6


def test_flops_threshold_zeroes_rows_but_keeps_them_in_n():
    rng = np.random.default_rng(4)
    e = sparse_docs(rng, 6, density=0.5)
    e[1, :] = 0.0
    e[1, :3] = [0.5, 0.25, 1.0]   # 3 non-zeros
    e[4, :] = 0.0
    e[4, 7] = 2.0                 # 1 non-zero
    nnz = np.count_nonzero(e, axis=1)
    assert nnz.min() <= 3 < np.sort(nnz)[2]  # rows 1 and 4 fall under t = 3, the others not
    got = float(flops_loss(e, threshold=3))
    kept = e.copy()
    kept[nnz <= 3] = 0.0
    assert rel(got, np_flops(e, threshold=3)) < 1e-6
    assert rel(got, float(((kept.astype(np.float64).sum(0) / 6) ** 2).sum())) < 1e-6
    dropped = e[nnz > 3].astype(np.float64)
    assert abs(got - float(((dropped.mean(0)) ** 2).sum())) > 1e-3  # not a mean over the kept rows only
    # Threshold 0 drops only all-zero rows, which contribute nothing anyway.
    assert rel(flops_loss(e, threshold=0), np_flops(e)) < 1e-6
    # Threshold at or above every count zeroes everything.
    assert float(flops_loss(e, threshold=int(nnz.max()))) == 0.0


def test_flops_idf_variant():
    rng = np.random.default_rng(5)
    e = sparse_docs(rng, 5)
    idf = rng.uniform(0.0, 4.0, V).astype(np.float32)
    got = flops_loss(e, idf_V=idf)
    assert rel(got, np_flops(e, idf=idf)) < 1e-6
    assert rel(flops_loss(e, threshold=8, idf_V=idf), np_flops(e, threshold=8, idf=idf)) < 1e-6
    assert rel(flops_loss(e, idf_V=np.ones(V, np.float32)), np_flops(e)) < 1e-6


@pytest.mark.parametrize("k", [0, 1, 2])
def test_splade_loss_terms_match_numpy(k):
    b = 4
    rng = np.random.default_rng(20 + k)
    q = queries(rng, b)
    cols = [sparse_docs(rng, b) for _ in range(1 + k)]
    lam_d, lam_q = 3e-5, 5e-5
    terms = splade_loss(jnp.asarray(q), [jnp.asarray(c) for c in cols], lam_d, lam_q)
    all_docs = np.concatenate(cols, axis=0)  # N = (1 + K) B rows
    base = np_rank_loss(q, all_docs)
    doc = lam_d * np_flops(all_docs)
    qry = lam_q * np_flops(q)
    assert set(terms) == {"base_loss", "document_regularizer_loss", "query_regularizer_loss", "total"}
    assert rel(terms["base_loss"], base) < 1e-6
    assert rel(terms["document_regularizer_loss"], doc) < 1e-6
    assert rel(terms["query_regularizer_loss"], qry) < 1e-6
    assert rel(terms["total"], base + doc + qry) < 1e-6
    # One stacked [C, B, V] array is accepted as well.
    stacked = splade_loss(q, np.stack(cols), lam_d, lam_q)
    for key in terms:
        assert float(stacked[key]) == float(terms[key])


def test_splade_loss_thresholds_and_idf_reach_the_right_side():
    b = 3
    rng = np.random.default_rng(30)
    q = queries(rng, b)
    q[2] = 0.0
    q[2, 0] = 1.5  # one non-zero: under a query threshold of 2
    cols = [sparse_docs(rng, b), sparse_docs(rng, b)]
    idf_d = rng.uniform(0.5, 3.0, V).astype(np.float32)
    idf_q = rng.uniform(0.5, 3.0, V).astype(np.float32)
    terms = splade_loss(q, cols, 1e-2, 2e-2, doc_threshold=10, query_threshold=2, doc_idf_V=idf_d,
                        query_idf_V=idf_q)
    docs = np.concatenate(cols)
    assert rel(terms["document_regularizer_loss"], 1e-2 * np_flops(docs, 10, idf_d)) < 1e-6
    assert rel(terms["query_regularizer_loss"], 2e-2 * np_flops(q, 2, idf_q)) < 1e-6


def test_lambda_q_none_gives_exact_zero_query_term():
    rng = np.random.default_rng(6)
    q = queries(rng, 3)
    cols = [sparse_docs(rng, 3)]
    terms = splade_loss(q, cols, 3e-5, None)
    assert float(terms["query_regularizer_loss"]) == 0.0
    assert float(terms["total"]) == float(terms["base_loss"] + terms["document_regularizer_loss"])


def test_splade_loss_under_jit_with_traced_weights():
    rng = np.random.default_rng(7)
    q = jnp.asarray(queries(rng, 4))
    cols = [jnp.asarray(sparse_docs(rng, 4)) for _ in range(2)]
    eager = splade_loss(q, cols, 3e-5, 5e-5)
    jitted = jax.jit(lambda q, c0, c1, ld, lq: splade_loss(q, [c0, c1], ld, lq))(
        q, cols[0], cols[1], jnp.float32(3e-5), jnp.float32(5e-5))
    for key in eager:
        assert rel(jitted[key], eager[key]) < 1e-6


def test_bfloat16_inputs_are_computed_in_float32():
    rng = np.random.default_rng(8)
    q = jnp.asarray(queries(rng, 2), jnp.bfloat16)
    d = jnp.asarray(sparse_docs(rng, 2), jnp.bfloat16)
    terms = splade_loss(q, [d], 3e-5, 5e-5)
    assert terms["total"].dtype == jnp.float32
    q64 = np.asarray(q.astype(jnp.float32), np.float64)
    d64 = np.asarray(d.astype(jnp.float32), np.float64)
    assert rel(terms["base_loss"], np_rank_loss(q64, d64)) < 1e-6


# ----------------------------------------------------------------------------- gradients
def _fd_check(fn, args, argnum, coords, h=1e-6):
    """Central differences of fn (float64) at the given flat coordinates of args[argnum]."""
    grad = np.asarray(jax.grad(fn, argnums=argnum)(*args))
    base = np.asarray(args[argnum])
    scale = np.abs(grad).max()
    assert scale > 0
    for c in coords:
        plus = base.copy().reshape(-1)
        minus = base.copy().reshape(-1)
        plus[c] += h
        minus[c] -= h
        a_plus = list(args)
        a_minus = list(args)
        a_plus[argnum] = jnp.asarray(plus.reshape(base.shape))
        a_minus[argnum] = jnp.asarray(minus.reshape(base.shape))
        fd = (float(fn(*a_plus)) - float(fn(*a_minus))) / (2 * h)
        assert abs(fd - grad.reshape(-1)[c]) <= 1e-6 * scale, (c, fd, grad.reshape(-1)[c])


def test_gradients_match_finite_differences_float64():
    rng = np.random.default_rng(40)
    b = 3
    q_np = queries(rng, b).astype(np.float64)
    cols_np = [sparse_docs(rng, b).astype(np.float64) for _ in range(2)]
    with x64():
        q = jnp.asarray(q_np)
        c0, c1 = jnp.asarray(cols_np[0]), jnp.asarray(cols_np[1])

        def total(q, c0, c1):
            return splade_loss(q, [c0, c1], 0.05, 0.08, scale=2.0)["total"]

        assert total(q, c0, c1).dtype == jnp.float64
        coords_q = rng.choice(b * V, 12, replace=False)
        coords_d = rng.choice(b * V, 12, replace=False)
        _fd_check(total, (q, c0, c1), 0, coords_q)
        _fd_check(total, (q, c0, c1), 1, coords_d)
        _fd_check(total, (q, c0, c1), 2, coords_d)


def test_threshold_gradient_matches_finite_differences_on_nonzero_entries():
    rng = np.random.default_rng(41)
    e_np = sparse_docs(rng, 5, density=0.4).astype(np.float64)
    e_np[2] = 0.0
    e_np[2, [1, 5]] = [0.7, 0.3]  # 2 non-zeros: masked by t = 4
    idf_np = rng.uniform(0.5, 2.0, V)
    with x64():
        e = jnp.asarray(e_np)
        idf = jnp.asarray(idf_np)
        fn = lambda e: flops_loss(e, threshold=4, idf_V=idf)  # noqa: E731
        grad = np.asarray(jax.grad(fn)(e))
        assert not np.any(grad[2])  # the masked row gets no gradient
        nonzero = np.flatnonzero(e_np.reshape(-1))  # perturbing those keeps every row's count
        _fd_check(fn, (e,), 0, rng.choice(nonzero, 12, replace=False))


def test_query_flops_gradient_closed_form():
    """Q = P ⊙ w: ∂FLOPS/∂w_j = 2 w_j p̄_j² and ∂L_rank/∂w_j = Σ_i P[i,j] ∂L_rank/∂Q[i,j] (§5.3)."""
    rng = np.random.default_rng(42)
    b = 4
    p = presence(rng, b)
    p[:, 3] = 1.0  # a token present in every query
    w = rng.uniform(-0.5, 2.0, V).astype(np.float32)
    cols = [jnp.asarray(sparse_docs(rng, b))]
    lam_q = 5e-2

    def query_term(w):
        return splade_loss(jnp.asarray(p) * w, cols, 3e-5, lam_q)["query_regularizer_loss"]

    got = np.asarray(jax.grad(query_term)(jnp.asarray(w)), np.float64)
    pbar = p.astype(np.float64).mean(0)
    expected = lam_q * 2.0 * w.astype(np.float64) * pbar ** 2
    assert np.max(np.abs(got - expected)) <= 1e-6 * np.max(np.abs(expected))
    assert np.all(got[pbar == 0] == 0.0)  # absent tokens get exactly no gradient

    def base(w):
        return splade_loss(jnp.asarray(p) * w, cols, 3e-5, lam_q)["base_loss"]

    g_w = np.asarray(jax.grad(base)(jnp.asarray(w)), np.float64)
    g_q = np.asarray(jax.grad(lambda q: sparse_mnrl_loss(q, cols[0]))(jnp.asarray(p) * w), np.float64)
    chain = (p * g_q).sum(0)
    assert np.max(np.abs(g_w - chain)) <= 1e-6 * np.max(np.abs(chain))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call,exc,match", [
    (lambda: sparse_mnrl_loss(np.ones((2, V)), np.ones((3, V))), ValueError, "docs_NxV"),
    (lambda: sparse_mnrl_loss(np.ones((2, V)), np.ones((2, V + 1))), ValueError, "vocabulary"),
    (lambda: sparse_mnrl_loss(np.ones(V), np.ones((2, V))), ValueError, "query_BxV"),
    (lambda: flops_loss(np.ones((2, V)), threshold=-1), ValueError, "threshold"),
    (lambda: flops_loss(np.ones((2, V)), idf_V=np.ones(V - 1)), ValueError, "idf_V"),
    (lambda: flops_loss(np.array([["a", "b"]])), TypeError, "emb_NxV"),
    (lambda: splade_loss(np.ones((2, V)), [], 1.0, 1.0), ValueError, "doc_columns"),
    (lambda: splade_loss(np.ones((2, V)), [np.ones((3, V))], 1.0, 1.0), ValueError, r"doc_columns\[0\]"),
    (lambda: splade_loss(np.ones((2, V)), [np.ones((2, V))], None, 1.0), TypeError, "lambda_d"),
    (lambda: splade_loss(np.ones((2, V)), 1.0, 1.0, 1.0), TypeError, "doc_columns"),
])
def test_bad_inputs_raise_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
