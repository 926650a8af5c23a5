"""How a backbone's forward runs (dtype, attention kernel, remat, head tiling): options that are not part of
the checkpoint, shared by every backbone family.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": None}


@dataclass(frozen=True)
class ComputeOptions:
    """How the forward runs (not part of the checkpoint).

    dtype:      activation/matmul dtype; parameters stay float32 ("master weights"). Softmax and
                norms accumulate in float32 either way.
    attention:  "auto" | "xla" | "chunked" (see jsplade.backbones.layers.attention).
    remat:      rematerialise each encoder layer in the backward pass (memory for compute).
    remat_keeps_attention: with ``remat``, also keep each layer's blockwise-attention output and softmax
                statistics (one [B, L, D] tensor and two [B, H, L] ones per layer, in the compute dtype /
                float32), so the backward pass recomputes the layer without its attention, the costliest
                part of a long document's forward (8192 tokens, 2-core CPU: about 1.3 s of a layer's 2.2 s).
                Applies where the blockwise implementation runs; False: keep only each layer's input.
    precision:  float32 matmul precision: "highest" (exact float32, default; no TF32 on GPUs) or "default".
    head:       "fused" (default): the tiled SPLADE head of ``jsplade.splade.fused_head`` — the [B, L, V] logits
                never exist, forward or backward, and it is faster; "plain": full logits (reference path).
                Same values and gradients either way.
    head_chunk: tokens per block of the fused head (None: automatic).
    vocab_tile: vocabulary entries per block of the fused head (None: per backend, see
                ``jsplade.splade.fused_head.default_vocab_tile``).
    mlp_chunk:  inputs longer than twice this many tokens run each layer's MLP in blocks of this many
                tokens (a loop), so its [B, L, 2·I] intermediates exist one block at a time: the largest
                activations of a long document (at 8192 tokens 96–192 MB each). Only without dropout
                (inference, dropout-free training); None: never. Same values either way (the MLP is per token).
    """

    dtype: str = "float32"
    attention: str = "auto"
    remat: bool = False
    remat_keeps_attention: bool = True
    precision: str = "highest"
    head: str = "fused"
    head_chunk: int | None = None
    vocab_tile: int | None = None
    mlp_chunk: int | None = 1024

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ValueError(f"ComputeOptions.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.head not in ("fused", "plain"):
            raise ValueError(f"ComputeOptions.head must be 'fused' or 'plain', got {self.head!r}")
        if self.mlp_chunk is not None and (isinstance(self.mlp_chunk, bool) or not isinstance(self.mlp_chunk, int)
                                           or self.mlp_chunk < 1):
            raise ValueError(f"ComputeOptions.mlp_chunk must be a positive int or None, got {self.mlp_chunk!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"ComputeOptions.precision must be one of {sorted(_PRECISIONS)}, got {self.precision!r}")

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def lax_precision(self):
        return _PRECISIONS[self.precision] if self.dtype == "float32" else None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``; empty where it is not readable)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def inference_dtype(platform: str | None = None, flags: set[str] | None = None) -> tuple[str, str]:
    """(compute dtype, reason) for encoding on this machine's default backend.

    GPUs and TPUs: "bfloat16" (their matrix units run it at several times the float32 rate). CPUs:
    "bfloat16" only with AMX tiles (``amx_bf16``); otherwise "float32", because without AMX bfloat16 matmuls
    are converted to float32 around each dot and run slower (measured on an avx512_bf16 CPU without AMX:
    2,000 LIMIT documents at 2.67 docs/s in bfloat16 against 3.94 in float32)."""
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda", "rocm", "tpu"):
        return "bfloat16", f"{platform} backend: bfloat16 matrix units"
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "bfloat16", "CPU with AMX (amx_bf16)"
    has = "avx512_bf16 but no AMX" if "avx512_bf16" in flags else "no AMX"
    return "float32", f"CPU with {has}: bfloat16 would run slower than float32"
