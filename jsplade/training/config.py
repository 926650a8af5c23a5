"""Training configuration: one flat dataclass, read from a small TOML file (or keyword arguments).

Every key is validated before any compute: an unknown key, a wrong type or an inconsistent pair is a
``ValueError`` naming the key (and the file). Paths in a config file are resolved relative to the file.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsplade.backbones.registry import known_namings
from jsplade.training.losses import base_loss, resolve_loss_name


@dataclass
class TrainConfig:
    # --- model and data
    base_model: str = ""                       # SparseEncoder directory, jsplade checkpoint dir, or hub id
    train_data: str = ""                       # .jsonl / .csv / .parquet with one column per role
    columns: list[str] | None = None           # column order = roles: anchor (query), positive, negatives…
    output_dir: str = "runs/train"
    # --- schedule
    batch_size: int = 32
    epochs: int = 1
    max_steps: int | None = None               # overrides epochs when set
    grad_accum_steps: int = 1
    learning_rate: float = 2e-5
    warmup_ratio: float | None = 0.1           # ceil(ratio · total steps), transformers 4.x rule
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    freeze_query_weights: bool = False         # the query route: static weights, or an asymmetric model's query MLM
    query_lr_multiplier: float = 1.0           # per-module learning rate: the query route (as above)
    document_lr_multiplier: float = 1.0        # per-module learning rate: document encoder
    # --- SpladeLoss
    loss: str = "SparseMultipleNegativesRankingLoss"  # the base loss: a sentence-transformers sparse loss name
    loss_params: dict[str, Any] = field(default_factory=dict)  # its parameters (reference defaults otherwise)
    use_document_regularizer_only: bool = False  # every column regularised as documents; lambda_q is then ignored
    scale: float = 1.0                         # SparseMultipleNegativesRankingLoss's scale
    lambda_d: float = 3e-5
    lambda_q: float | None = 5e-5
    regularizer_schedule: str = "quadratic"    # "quadratic" | "linear"
    regularizer_warmup_ratio: float = 1 / 3
    document_threshold: int | None = None      # FLOPS ℓ0 mask thresholds (rows with ≤ t non-zeros are ignored)
    query_threshold: int | None = None
    document_idf_weighting: bool = False       # IDF inside the square (OpenSearch v3 paper); IDF = static query weights
    # --- data order
    seed: int = 42
    sampler_seed: int | None = None            # default: seed
    drop_last: bool = False
    replay_batches: str | None = None          # JSON file: [[row, …], …] one list per optimizer step
    streaming: bool = False                    # read train_data lazily (shards: a directory, glob or file); needs max_steps
    shuffle_buffer_size: int = 10000           # streaming: rows shuffled (and de-duplicated) together
    # --- compute
    mesh: str | None = None                    # None: one device; "auto" or "data=2,fsdp=2,tensor=2" (jsplade.training.sharding)
    compute_dtype: str = "float32"             # "float32" | "bfloat16" (float32 master weights)
    remat: bool = False
    cached_mini_batch_size: int | None = None  # GradCache (CachedSpladeLoss): rows embedded at once; None: off
    remat_keeps_attention: bool = True         # with remat: keep blockwise-attention outputs (ComputeOptions)
    attention: str = "auto"
    dropout: bool = True                       # dropout at the config's rates during training
    max_query_length: int | None = None        # default: the query tokenizer's model_max_length
    max_document_length: int | None = None     # default: the encoder's max_seq_length
    pack_documents: bool = False               # several documents per row (segment ids; jsplade.splade.packing)
    pack_length: int | None = None             # tokens per packed row (default: max_document_length)
    # --- outputs
    log_every: int = 1
    tensorboard: bool = True
    checkpoint_every: int | None = None        # steps; None → only at the end
    keep_checkpoints: int = 3
    async_checkpointing: bool = False
    resume: bool = True                        # continue from the latest checkpoint in output_dir
    export_layout: str = "st"                  # final SparseEncoder directory layout: "st" | "opensearch"
    export_naming: str | None = None           # the backbone's weight naming (GTE: "new" | "gte"); None: canonical
    eval_every: int | None = None
    progress_bar: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config", base_dir: Path | None = None,
                  cwd_keys: frozenset[str] = frozenset()) -> TrainConfig:
        """Relative paths (``train_data``, ``replay_batches``, ``output_dir``, ``base_model`` when that folder
        exists) are resolved against ``base_dir`` (the config file's folder), those of ``cwd_keys`` (values
        given on the command line) against the current directory."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a table of settings, got {type(raw).__name__}")
        try:
            flat = _flatten_sections(raw)  # [sections] are only for readability
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(flat) - names)
        if unknown:
            import difflib

            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"{source}: unknown config key(s): {', '.join(hints)}")
        if base_dir is not None:
            for key in ("train_data", "replay_batches", "output_dir", "base_model"):
                value = flat.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute() and "://" not in value:
                    candidate = (Path.cwd() if key in cwd_keys else base_dir) / value
                    if key != "base_model" or candidate.exists():
                        flat[key] = str(candidate.resolve())
        try:
            return cls(**flat)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: malformed TOML ({exc})") from None
        try:
            raw = {**_flatten_sections(raw), **(overrides or {})}
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return cls.from_dict(raw, source=str(path), base_dir=path.parent, cwd_keys=frozenset(overrides or {}))

    def loss_spec_name(self) -> str:
        """The base loss's sentence-transformers class name (aliases resolved)."""
        return resolve_loss_name(self.loss)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        positive = ("batch_size", "epochs", "grad_accum_steps", "log_every", "keep_checkpoints", "shuffle_buffer_size")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"config key {key!r} must be >= 1, got {getattr(self, key)!r}")
        for key in ("max_steps", "checkpoint_every", "eval_every", "max_query_length", "max_document_length",
                    "pack_length", "cached_mini_batch_size"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ValueError(f"config key {key!r} must be >= 1 or unset, got {v!r}")
        if self.learning_rate < 0 or not math.isfinite(self.learning_rate):
            raise ValueError(f"config key 'learning_rate' must be a finite number >= 0, got {self.learning_rate!r}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"config key 'warmup_ratio' must be in [0, 1], got {self.warmup_ratio!r}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"config key 'warmup_steps' must be >= 0, got {self.warmup_steps!r}")
        if self.regularizer_schedule not in ("quadratic", "linear"):
            raise ValueError("config key 'regularizer_schedule' must be 'quadratic' or 'linear', "
                             f"got {self.regularizer_schedule!r}")
        if not 0.0 < self.regularizer_warmup_ratio <= 1.0:
            raise ValueError(f"config key 'regularizer_warmup_ratio' must be in (0, 1], got {self.regularizer_warmup_ratio!r}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"config key 'compute_dtype' must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
        if self.export_layout not in ("st", "opensearch"):
            raise ValueError(f"config key 'export_layout' must be 'st' or 'opensearch', got {self.export_layout!r}")
        if self.export_naming is not None and self.export_naming not in known_namings():
            raise ValueError(f"config key 'export_naming' must be one of {known_namings()} or unset, "
                             f"got {self.export_naming!r}")
        if self.lambda_d < 0 or (self.lambda_q is not None and self.lambda_q < 0):
            raise ValueError("config keys 'lambda_d'/'lambda_q' must be >= 0")
        try:
            base_loss(self.loss, self.loss_params)  # the name and every parameter, before any compute
        except ValueError as exc:
            raise ValueError(f"config key 'loss' / 'loss_params': {exc}") from None
        if "scale" in self.loss_params and self.scale != 1.0 and self.loss_spec_name() == "SparseMultipleNegativesRankingLoss":
            raise ValueError("config keys 'scale' and 'loss_params.scale' both set the ranking loss's scale; give one")
        if self.streaming and self.shuffle_buffer_size < self.batch_size:
            raise ValueError(f"config key 'shuffle_buffer_size' ({self.shuffle_buffer_size}) must be >= batch_size "
                             f"({self.batch_size})")
        if self.cached_mini_batch_size is not None and self.pack_documents:
            raise ValueError("config keys 'cached_mini_batch_size' and 'pack_documents' cannot be combined: the cached "
                             "step embeds mini-batches of rows, packing mixes rows")
        if self.columns is not None and len(self.columns) < 2:
            raise ValueError(f"config key 'columns' needs at least 2 columns (query, positive), got {self.columns!r}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"config key {key!r} must be in [0, 1), got {getattr(self, key)!r}")


_TABLE_KEYS = frozenset({"loss_params"})  # keys whose value is itself a table, not a section


def _flatten_sections(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict) and k not in _TABLE_KEYS:
            for kk, vv in v.items():
                if kk in out:
                    raise ValueError(f"key {kk!r} given twice")
                out[kk] = vv
        else:
            if k in out:
                raise ValueError(f"key {k!r} given twice")
            out[k] = v
    return out


def _check_type(name: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    ok: bool
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is list:
        ok = isinstance(value, list) and all(isinstance(x, args[0]) for x in value)
    elif origin is dict:
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ValueError(f"config key {name!r} must be of type {getattr(hint, '__name__', hint)}, "
                         f"got {type(value).__name__} {value!r}")
