"""The query route: binary token presence × a trainable static weight per vocabulary entry.

q[b, j] = w[j] if token j occurs (unmasked) in query b, else 0 (sparse_encoder_format.md §3.2): a token
repeated k times counts once, [UNK] is kept, there is no relu/clamp (trained weights may go negative).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx


class StaticQueryEmbedding(nnx.Module):
    """``weight`` [V] float32; ``module(presence_BxV) -> query embeddings [B, V]``."""

    def __init__(self, weight):
        weight_V = np.asarray(weight)
        if weight_V.ndim != 1:
            raise ValueError(f"static query weight must be 1-D [vocab], got shape {list(weight_V.shape)}")
        self.weight = nnx.Param(jnp.asarray(weight_V, jnp.float32))

    @property
    def vocab_size(self) -> int:
        return int(self.weight.get_value().shape[0])

    def __call__(self, presence: jnp.ndarray) -> jnp.ndarray:
        """Query vectors [B, V] of a binary presence matrix [B, V] (``query_presence``)."""
        return presence * self.weight[...]


def query_presence(input_ids: jnp.ndarray, attention_mask: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
    """Binary presence [B, V] float32 of the unmasked token ids of each row ([B, L] ids and mask)."""
    ids_BxL, mask_BxL = jnp.asarray(input_ids, jnp.int32), attention_mask
    batch = ids_BxL.shape[0]
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], ids_BxL.shape)
    present = (jnp.asarray(mask_BxL) != 0).astype(jnp.float32)
    return jnp.zeros((batch, vocab_size), jnp.float32).at[rows, ids_BxL].max(present)


def query_rows_csr(ids_per_query: list[np.ndarray], weight: np.ndarray) -> sp.csr_matrix:
    """Query encodings as CSR [n, V] float32 straight from token ids (no model call).

    Entries whose weight is exactly 0 are not stored (they are not active dimensions).
    """
    weight_V = np.asarray(weight, dtype=np.float32)
    indptr = [0]
    indices: list[np.ndarray] = []
    for ids in ids_per_query:
        uniq = np.unique(np.asarray(ids, dtype=np.int64))
        uniq = uniq[weight_V[uniq] != 0]
        indices.append(uniq)
        indptr.append(indptr[-1] + len(uniq))
    cols = np.concatenate(indices) if indices else np.zeros((0,), np.int64)
    data = weight_V[cols]
    return sp.csr_matrix((data, cols.astype(np.int32), np.asarray(indptr, np.int64)),
                         shape=(len(ids_per_query), weight_V.shape[0]), dtype=np.float32)
