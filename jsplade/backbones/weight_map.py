"""HF state-dict tensors ⇄ flat jsplade parameters, driven by a backbone's table of ``TensorRule`` s.

Each ``TensorRule`` says which jsplade parameter (a dotted path, ``jsplade.backbones.params``) is built from
which HF tensor(s), and how:

* ``embedding``: copied as is ([rows, D] in both worlds).
* ``vector``:    HF 1-D tensors concatenated, then reshaped to the parameter's dims.
* ``kernel``:    HF ``Linear`` weights ([out, in] each) concatenated along ``out``, transposed to
                 [in, out] and reshaped to ``in_dims + out_dims``. Several HF keys = packing (e.g. GTE's
                 one ``qkv_proj`` [3D, D] against transformers' separate q/k/v).

Dims are symbols (``"D"``, ``"V"``, …) that the backbone's ``dims(config)`` sizes. The tables themselves
are data in each backbone's ``*_names`` module; this module only applies them, in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class TensorRule:
    param: str
    hf: tuple[str, ...]
    kind: str  # "embedding" | "vector" | "kernel"
    in_dims: tuple[str, ...] = ()
    out_dims: tuple[str, ...] = ()


class WeightMismatchError(ValueError):
    """Checkpoint tensors that do not fit the config (missing, unexpected, wrong shape)."""


def param_shape(rule: TensorRule, dims: Mapping[str, int]) -> tuple[int, ...]:
    """The jsplade parameter's shape."""
    return tuple(dims[s] for s in rule.in_dims + rule.out_dims)


def hf_shapes(rule: TensorRule, dims: Mapping[str, int]) -> list[tuple[int, ...]]:
    """Expected shape of each HF tensor of a rule (equal split of the output axis)."""
    if rule.kind == "embedding":
        return [param_shape(rule, dims)]
    out = int(np.prod([dims[s] for s in rule.out_dims])) // len(rule.hf)
    if rule.kind == "vector":
        return [(out,)] * len(rule.hf)
    inn = int(np.prod([dims[s] for s in rule.in_dims]))
    return [(out, inn)] * len(rule.hf)


def hf_to_params(tensors: Mapping[str, np.ndarray], rules: list[TensorRule], dims: Mapping[str, int],
                 tied_decoder: tuple[str, str] | None = None, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """HF state dict → {param path: float32 array}. Strict: every mismatch is reported at once.

    ``tied_decoder`` = (HF key, parameter path): that tensor may be present only as an exact copy of the
    parameter (a tied decoder weight stored anyway)."""
    problems: list[str] = []
    used: set[str] = set()
    params: dict[str, np.ndarray] = {}
    for rule in rules:
        expected = hf_shapes(rule, dims)
        parts = []
        for key, shape in zip(rule.hf, expected):
            if key not in tensors:
                problems.append(f"missing tensor {key!r} (expected shape {list(shape)})")
                continue
            used.add(key)
            arr = np.asarray(tensors[key])
            if tuple(arr.shape) != shape:
                problems.append(f"tensor {key!r} has shape {list(arr.shape)}, the config implies {list(shape)}")
                continue
            if not np.issubdtype(arr.dtype, np.floating):
                problems.append(f"tensor {key!r} has dtype {arr.dtype}, expected a float type")
                continue
            parts.append(arr.astype(np.float32))
        if len(parts) != len(rule.hf):
            continue
        params[rule.param] = _to_param(rule, parts, dims)
    if tied_decoder is not None and tied_decoder[0] in tensors:
        decoder_key, tied_param = tied_decoder
        used.add(decoder_key)
        word = params.get(tied_param)
        dec = np.asarray(tensors[decoder_key])
        if word is not None and (dec.shape != word.shape or not np.array_equal(dec.astype(np.float32), word)):
            problems.append(f"tensor {decoder_key!r} is not equal to the word embeddings; jsplade requires "
                            "the MLM decoder tied to the word embeddings")
    unexpected = sorted(k for k in tensors if k not in used)
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:8])
        more = f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
        problems.append(f"unexpected tensors not used by this config: {shown}{more}")
    if problems:
        raise WeightMismatchError(f"{source}: weights do not fit the config:\n  - " + "\n  - ".join(problems))
    return params


def params_to_hf(params: Mapping[str, np.ndarray], rules: list[TensorRule],
                 dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    """{param path: array} → HF state dict (float32, contiguous; tied weights are not in the rules)."""
    out: dict[str, np.ndarray] = {}
    for rule in rules:
        if rule.param not in params:
            raise WeightMismatchError(f"parameter {rule.param!r} is missing")
        value = np.asarray(params[rule.param], dtype=np.float32)
        expected = param_shape(rule, dims)
        if tuple(value.shape) != expected:
            raise WeightMismatchError(f"parameter {rule.param!r} has shape {list(value.shape)}, "
                                      f"the config implies {list(expected)}")
        for key, part in zip(rule.hf, _from_param(rule, value, dims)):
            out[key] = np.ascontiguousarray(part)
    return out


def _to_param(rule: TensorRule, parts: list[np.ndarray], dims: Mapping[str, int]) -> np.ndarray:
    shape = param_shape(rule, dims)
    if rule.kind == "embedding":
        return parts[0]
    if rule.kind == "vector":
        return np.concatenate(parts, axis=0).reshape(shape)
    return np.concatenate(parts, axis=0).T.reshape(shape)


def _from_param(rule: TensorRule, value: np.ndarray, dims: Mapping[str, int]) -> list[np.ndarray]:
    if rule.kind == "embedding":
        return [value]
    n = len(rule.hf)
    if rule.kind == "vector":
        return np.split(value.reshape(-1), n, axis=0)
    inn = int(np.prod([dims[s] for s in rule.in_dims]))
    full = value.reshape(inn, -1).T  # [out, in]
    return np.split(full, n, axis=0)
