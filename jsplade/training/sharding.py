"""Device meshes and parameter/batch shardings for training on 1 chip … a TPU pod.

* Mesh axes are always ``("data", "fsdp", "tensor")`` (any may be 1), built from a string such as
  ``"data=2,fsdp=2,tensor=2"`` (one axis may be ``-1``: the rest of the devices) or ``"auto"``.
* Every parameter gets logical axis names (vocab, embed, heads, kv, mlp, …) from the model's table, matched
  on the parameter path (``SpladeModel.logical_axes()``: the backbone's ``Backbone.logical_axes`` and the
  static query weight's), and ``RULES`` here map logical names to mesh axes. Both are data. A dimension
  that the mesh axis size does not divide stays replicated.
* Batches are sharded on their row axis over ``data × fsdp``; everything else follows from ``jax.jit``
  with these in/out shardings: the contrastive loss sees the global batch (every query against every
  document of every device) without a hand-written gather, and FLOPS means are global.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

logger = logging.getLogger("jsplade")

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# A table of logical axes: (regex on the dotted parameter path, first match wins) → logical axis name per
# dimension. Each backbone declares its own (``Backbone.logical_axes``); ``SpladeModel.logical_axes()`` joins
# it with the static query weight's.
AxesTable = Sequence[tuple[str, tuple[str | None, ...]]]

# Logical axis → mesh axis (or None: replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "vocab": "tensor",
    "embed": "fsdp",
    "embed_out": "tensor",
    "heads": "tensor",
    "mlp": "tensor",
    "kv": None,
    "norm": None,
    "batch": BATCH_AXES,
}


# --------------------------------------------------------------------------- meshes
def parse_mesh_spec(spec: str, n_devices: int) -> dict[str, int]:
    """``"data=2,fsdp=2,tensor=2"`` / ``"fsdp=-1"`` / ``"auto"`` → axis sizes whose product is n_devices."""
    if spec is None or spec.strip() in ("", "auto"):
        return {"data": n_devices, "fsdp": 1, "tensor": 1}
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ValueError(f"mesh spec {spec!r}: expected axis=size items separated by commas, got {part!r}")
        name, value = (x.strip() for x in part.split("=", 1))
        if name not in MESH_AXES:
            raise ValueError(f"mesh spec {spec!r}: unknown axis {name!r} (axes: {', '.join(MESH_AXES)})")
        if name in sizes:
            raise ValueError(f"mesh spec {spec!r}: axis {name!r} given twice")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(f"mesh spec {spec!r}: size of {name!r} must be an integer, got {value!r}") from None
    wild = [k for k, v in sizes.items() if v == -1]
    if len(wild) > 1:
        raise ValueError(f"mesh spec {spec!r}: at most one axis may be -1")
    for k in MESH_AXES:
        sizes.setdefault(k, 1)
    if any(v < 1 and v != -1 for v in sizes.values()):
        raise ValueError(f"mesh spec {spec!r}: sizes must be >= 1 (or -1 once)")
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if wild:
        if n_devices % fixed:
            raise ValueError(f"mesh spec {spec!r}: {n_devices} devices are not divisible by {fixed}")
        sizes[wild[0]] = n_devices // fixed
    if math.prod(sizes.values()) != n_devices:
        raise ValueError(f"mesh spec {spec!r} needs {math.prod(sizes.values())} devices, {n_devices} are present")
    return {k: sizes[k] for k in MESH_AXES}


def make_mesh(spec: str | None = "auto", devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    sizes = parse_mesh_spec(spec or "auto", len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
    except Exception:  # noqa: BLE001 - CPU/fake devices: plain order (process-contiguous)
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)


# --------------------------------------------------------------------------- params
def logical_axes(path: str, ndim: int, table: AxesTable) -> tuple[str | None, ...]:
    """The logical axis names of parameter ``path`` (of rank ``ndim``) by the first matching ``table`` row."""
    for pattern, axes in table:
        if re.search(pattern, path):
            if len(axes) != ndim:
                raise ValueError(f"parameter {path!r}: logical axes {axes} do not fit its rank {ndim}")
            return axes
    raise ValueError(f"parameter {path!r} has no logical-axis rule in the model's logical_axes table")


def partition_spec(path: str, shape: tuple[int, ...], mesh: Mesh, table: AxesTable) -> P:
    """Mesh placement of one parameter; dimensions the mesh axis does not divide stay replicated."""
    spec = []
    used: set[str] = set()
    for dim, name in zip(shape, logical_axes(path, len(shape), table)):
        axis = RULES.get(name) if name is not None else None
        axes = (axis,) if isinstance(axis, str) else tuple(axis or ())
        axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
        size = math.prod(mesh.shape[a] for a in axes) if axes else 1
        if axes and dim % size == 0:
            spec.append(axes[0] if len(axes) == 1 else axes)
            used.update(axes)
        else:
            if axes:
                logger.debug("parameter %s: dim %d not divisible by %s=%d, replicated", path, dim, axes, size)
            spec.append(None)
    return P(*spec)


def _path(key_path) -> str:
    parts = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    if parts and parts[-1] in ("value", "raw_value"):  # nnx.Variable leaves
        parts.pop()
    return ".".join(parts)


def param_shardings(params: Any, mesh: Mesh, table: AxesTable) -> Any:
    """A pytree of NamedSharding matching ``params`` (an nnx.State or any pytree of arrays)."""
    def one(key_path, leaf):
        return NamedSharding(mesh, partition_spec(_path(key_path), tuple(np.shape(leaf)), mesh, table))

    return jax.tree_util.tree_map_with_path(one, params)


def batch_sharding(mesh: Mesh, ndim: int, row_axis: int) -> NamedSharding:
    spec = [None] * ndim
    spec[row_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


# Row axis of each training batch array ([A, B, Lq], [A, C, B, Ld], packed rows [A, R, Lp], labels [A, B(, K)]);
# arrays not listed (pack_slot, pack_groups) are replicated.
BATCH_ROW_AXIS = {"query_ids": 1, "query_mask": 1, "doc_ids": 2, "doc_mask": 2, "pack_ids": 1, "pack_mask": 1,
                  "pack_pos": 1, "pack_seg": 1, "pack_group": 1, "labels": 1}
PADDED_BATCH_KEYS = ("query_ids", "query_mask", "doc_ids", "doc_mask")
PACKED_BATCH_KEYS = ("query_ids", "query_mask", "pack_ids", "pack_mask", "pack_pos", "pack_seg", "pack_group",
                     "pack_slot", "pack_groups")
_BATCH_NDIM = {"query_ids": 3, "query_mask": 3, "doc_ids": 4, "doc_mask": 4, "pack_slot": 3, "pack_groups": 2}


def batch_shardings(mesh: Mesh, packed: bool = False, label_ndim: int | None = None) -> dict[str, NamedSharding]:
    """Shardings of a training batch's arrays; ``label_ndim``: the ``labels`` array's rank (2 or 3), None
    without labels."""
    keys = PACKED_BATCH_KEYS if packed else PADDED_BATCH_KEYS
    out = {}
    for k in keys:
        ndim = _BATCH_NDIM.get(k, 3)
        out[k] = batch_sharding(mesh, ndim, BATCH_ROW_AXIS[k]) if k in BATCH_ROW_AXIS else \
            NamedSharding(mesh, P(*([None] * ndim)))
    if label_ndim is not None:
        out["labels"] = batch_sharding(mesh, label_ndim, BATCH_ROW_AXIS["labels"])
    return out


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def global_batch_from_host(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Place a host batch on the mesh. Every process computes the same global batch (deterministic plan);
    each contributes only the rows its devices hold (``jax.make_array_from_process_local_data``)."""
    shardings = batch_shardings(mesh, packed="pack_ids" in batch,
                                label_ndim=batch["labels"].ndim if "labels" in batch else None)
    out = {}
    for k, arr in batch.items():
        sharding = shardings[k]
        if jax.process_count() == 1 or k not in BATCH_ROW_AXIS:
            out[k] = jax.device_put(arr, sharding) if jax.process_count() == 1 else \
                jax.make_array_from_process_local_data(sharding, arr, arr.shape)
            continue
        axis = BATCH_ROW_AXIS[k]
        rows = arr.shape[axis]
        per_process = rows // jax.process_count()
        start = jax.process_index() * per_process
        local = np.take(arr, np.arange(start, start + per_process), axis=axis)
        out[k] = jax.make_array_from_process_local_data(sharding, local, arr.shape)
    return out


def global_batch_from_process_local(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Place a batch of which each process holds only its own rows (streamed data: every process reads its
    own share). The arrays must have the same shape on every process (lengths agreed beforehand); the
    global batch is the processes' rows in process order along each row axis. Padded batches only (the
    packed layout's ``pack_slot`` indexes the whole batch)."""
    if "pack_ids" in batch:
        raise ValueError("process-local batches must be padded, not packed")
    shardings = batch_shardings(mesh, label_ndim=batch["labels"].ndim if "labels" in batch else None)
    n = jax.process_count()
    out = {}
    for k, arr in batch.items():
        shape = list(arr.shape)
        shape[BATCH_ROW_AXIS[k]] *= n
        out[k] = jax.device_put(arr, shardings[k]) if n == 1 else \
            jax.make_array_from_process_local_data(shardings[k], arr, tuple(shape))
    return out


# --------------------------------------------------------------------------- train state
def shard_state(state: dict, optimizer, mesh: Mesh, table: AxesTable) -> tuple[dict, dict]:
    """Place a train state on ``mesh``: parameters by the rules (``table``: the model's logical axes),
    optimizer moments like their parameters (``optimizer.init`` under jit propagates the parameters'
    shardings), step and RNG replicated."""
    p_sh = param_shardings(state["params"], mesh, table)
    params = jax.device_put(state["params"], p_sh)
    rep = replicated(mesh)
    o_sh = optimizer_shardings(optimizer, state["params"], p_sh, mesh)
    opt = jax.jit(optimizer.init, out_shardings=o_sh)(params)
    shardings = {"params": p_sh, "opt": o_sh, "step": rep, "rng": rep}
    placed = {"params": params, "opt": opt, "step": jax.device_put(state["step"], rep),
              "rng": jax.device_put(state["rng"], rep)}
    return placed, shardings


def optimizer_shardings(optimizer, params, p_sh, mesh: Mesh):
    """Shardings of the optimizer state: a leaf whose key path ends with a parameter's path and has its
    shape (Adam's moments) takes that parameter's sharding; everything else (counts) is replicated."""
    by_path = {}
    for (kp, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(p_sh)):
        by_path[_path(kp)] = (tuple(np.shape(leaf)), sh)
    rep = replicated(mesh)

    def one(kp, leaf):
        path = _path(kp)
        for ppath, (shape, sh) in by_path.items():
            if (path == ppath or path.endswith("." + ppath)) and tuple(leaf.shape) == shape:
                return sh
        return rep

    return jax.tree_util.tree_map_with_path(one, jax.eval_shape(optimizer.init, params))


def jit_sharded_step(train_step, mesh: Mesh, state_shardings: dict, packed: bool = False,
                     label_ndim: int | None = None):
    """``jax.jit`` of a pure ``train_step(state, batch)`` with in/out shardings and the state donated."""
    return jax.jit(train_step, in_shardings=(state_shardings, batch_shardings(mesh, packed, label_ndim)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)
