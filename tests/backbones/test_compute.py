"""ComputeOptions: validation of every field and the derived dtype / precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jsplade.backbones.compute import ComputeOptions


def test_bad_mlp_chunk_is_refused():
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="mlp_chunk"):
            ComputeOptions(mlp_chunk=bad)
    assert ComputeOptions(mlp_chunk=None).mlp_chunk is None


def test_bad_fields_are_refused_by_name():
    for field, bad in (("dtype", "float16"), ("head", "tiled"), ("precision", "tf32")):
        with pytest.raises(ValueError, match=f"ComputeOptions.{field}"):
            ComputeOptions(**{field: bad})


def test_dtype_and_precision():
    assert ComputeOptions().jnp_dtype == jnp.float32
    assert ComputeOptions().lax_precision == jax.lax.Precision.HIGHEST
    assert ComputeOptions(precision="default").lax_precision is None
    # bfloat16 products never ask for float32 precision
    assert ComputeOptions(dtype="bfloat16").jnp_dtype == jnp.bfloat16
    assert ComputeOptions(dtype="bfloat16").lax_precision is None
