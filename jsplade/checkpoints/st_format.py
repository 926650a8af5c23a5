"""Reading a sentence-transformers ``SparseEncoder`` directory: inference-free (a Router: static query
weights | MLM + SpladePooling), symmetric ([MLMTransformer, SpladePooling], no Router) or asymmetric (a
Router with an MLM + SpladePooling on each route).

Both on-disk layouts (sparse_encoder_format.md §2.1) are accepted:

* ``"st_native"``: what ``SparseEncoder.save`` writes; the document transformer lives in a sub-folder
  (``document_0_MLMTransformer/``).
* ``"opensearch"``: the OpenSearch hub layout; the transformer's files are in the root (Router key
  ``""`` or ``"."``).

and both dialects: ``"st5"`` (sentence-transformers 5.x type strings and config keys) and ``"st6"``
(6.x ``...modules.<file>.<Class>`` type strings, ``embedding_dimension``, a plain ``Transformer`` with
``transformer_task "fill-mask"``). Only JSON and safetensors files are read: never pickle, never
``.py`` (a config's ``auto_map`` is only a name here). The transformer weights are not read here.

A third layout, ``"opensearch_bare"``, is OpenSearch's older inference-free folder: a bare Hugging Face MLM
folder (``config.json``, weights, tokenizer files; no ``modules.json``) with the static query weights in
the root as ``idf.json`` (token → weight) and/or ``query_token_weights.txt`` (``token<TAB>weight`` lines).
It is read as the equivalent inference-free sentence-transformers model: documents through the MLM with
SpladePooling("max", "relu"), queries through the weight table with the document tokenizer (no special
tokens). That differs from OpenSearch's own reference code only where it zeroes the special tokens
(documents) and keeps them (queries): the [UNK] column and literally typed special tokens. The table's
rules are stricter than for a sentence-transformers ``path`` JSON: tokens not listed weigh 0, a token
outside the tokenizer vocabulary is an error (the table belongs to another tokenizer), and when both
files are present they must hold the same tokens and the same float32 values.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jsplade.files import read_json, read_json_object, read_lines
from jsplade.checkpoints.safetensors_io import read_header, read_safetensors

logger = logging.getLogger("jsplade")

MODULES_FILE = "modules.json"
ROUTER_CONFIG_FILE = "router_config.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
MODULE_CONFIG_FILE = "config.json"
SBERT_CONFIG_FILE = "sentence_bert_config.json"
WEIGHT_FILE = "model.safetensors"
IDF_FILE = "idf.json"                                # bare OpenSearch folders: token → weight JSON
QUERY_TOKEN_WEIGHTS_FILE = "query_token_weights.txt"  # ... and/or token<TAB>weight lines

QUERY_ROUTE, DOCUMENT_ROUTE = "query", "document"
POOLING_STRATEGIES = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")

# Type strings per role: 5.x long (module file + class) and short (package) forms, 6.x forms.
_ST5, _ST6 = "st5", "st6"
_TYPE_STRINGS: dict[str, dict[str, str]] = {
    "router": {
        "sentence_transformers.models.Router": _ST5,
        "sentence_transformers.models.Router.Router": _ST5,
        "sentence_transformers.base.modules.router.Router": _ST6,
        "sentence_transformers.base.modules.Router": _ST6,
    },
    "static": {
        "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding.SparseStaticEmbedding": _ST5,
        "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding": _ST5,
        "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding": _ST6,
        "sentence_transformers.sparse_encoder.modules.SparseStaticEmbedding": _ST6,
    },
    "mlm": {
        "sentence_transformers.sparse_encoder.models.MLMTransformer.MLMTransformer": _ST5,
        "sentence_transformers.sparse_encoder.models.MLMTransformer": _ST5,
        "sentence_transformers.sparse_encoder.modules.mlm_transformer.MLMTransformer": _ST6,
        "sentence_transformers.sparse_encoder.modules.MLMTransformer": _ST6,
    },
    # A plain Transformer counts as the document transformer only with transformer_task "fill-mask".
    "transformer": {
        "sentence_transformers.models.Transformer": _ST5,
        "sentence_transformers.models.Transformer.Transformer": _ST5,
        "sentence_transformers.base.modules.transformer.Transformer": _ST6,
        "sentence_transformers.base.modules.Transformer": _ST6,
        "sentence_transformers.sparse_encoder.modules.Transformer": _ST6,
    },
    "pooling": {
        "sentence_transformers.sparse_encoder.models.SpladePooling.SpladePooling": _ST5,
        "sentence_transformers.sparse_encoder.models.SpladePooling": _ST5,
        "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling": _ST6,
        "sentence_transformers.sparse_encoder.modules.SpladePooling": _ST6,
    },
}
_ROLE_OF_TYPE = {t: role for role, table in _TYPE_STRINGS.items() for t in table}
_DIALECT_OF_TYPE = {t: d for table in _TYPE_STRINGS.values() for t, d in table.items()}
_ROLE_NAMES = {"static": "SparseStaticEmbedding", "mlm": "MLMTransformer", "transformer": "Transformer",
               "pooling": "SpladePooling", "router": "Router"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.md"]


@dataclass(frozen=True)
class QueryModuleSpec:
    """The query route's SparseStaticEmbedding: its folder, ``frozen`` flag and weight source.

    ``weight_file`` is the module's ``model.safetensors`` (``None`` if absent); ``json_weights_file`` is
    set when the module config has a ``path`` ending in ``.json`` (an idf-style token → weight map),
    which sentence-transformers then uses instead of the safetensors file. For a bare OpenSearch folder
    (layout ``"opensearch_bare"``) ``folder`` is the root, ``weight_file`` is None, ``json_weights_file``
    its ``idf.json`` and ``txt_weights_file`` its ``query_token_weights.txt`` (either may be None, not both),
    and ``opensearch_bare`` is set: its tables follow the stricter bare-folder rules.
    """
    folder: Path
    frozen: bool
    weight_file: Path | None
    json_weights_file: Path | None
    txt_weights_file: Path | None = None
    opensearch_bare: bool = False


@dataclass(frozen=True)
class DocumentModuleSpec:
    """The document route's MLM transformer folder; ``max_seq_length`` from its
    ``sentence_bert_config.json`` when given there, else ``None`` (see ``document_max_length``)."""
    folder: Path
    max_seq_length: int | None
    do_lower_case: bool = False  # sentence_bert_config.json: lowercase texts before tokenizing


@dataclass(frozen=True)
class PoolingSpec:
    """SpladePooling settings (``embedding_dimension`` is informational, ``None`` if not recorded)."""
    pooling_strategy: str
    activation_function: str
    embedding_dimension: int | None


SHAPES = ("inference_free", "symmetric", "asymmetric")


@dataclass(frozen=True)
class SparseEncoderSpec:
    """Everything a SparseEncoder directory says, except the weights themselves.

    ``shape`` "inference_free": a Router, queries through static weights (``query``); "symmetric": one MLM +
    SpladePooling for queries and documents alike (``query`` is None); "asymmetric": a Router with an MLM +
    SpladePooling on each route (``query`` None, ``query_mlm`` and ``query_pooling`` the query route's)."""
    root: Path
    layout: str   # "st_native", "opensearch", "plain" (symmetric: the transformer in the root, no Router) or
    #               "opensearch_bare" (a bare MLM folder with idf.json / query_token_weights.txt)
    dialect: str  # "st5" or "st6"
    query: QueryModuleSpec | None
    document: DocumentModuleSpec
    pooling: PoolingSpec
    similarity_fn_name: str = "dot"
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_active_dims: int | None = None
    default_route: str = DOCUMENT_ROUTE
    shape: str = "inference_free"
    query_mlm: DocumentModuleSpec | None = None
    query_pooling: PoolingSpec | None = None


# ----------------------------------------------------------------------------- small checks
def _is_positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value > 0


def _optional_positive_int(value: Any, where: str, key: str) -> int | None:
    if value is None:
        return None
    if not _is_positive_int(value):
        raise ValueError(f"{where}: {key} must be a positive integer or null, got {value!r}")
    return value


def _module_folder(router_dir: Path, module_id: str, router_file: Path) -> Path:
    """The folder of a Router module: the Router's own folder for ``""``/``"."``, else the sub-folder."""
    if not isinstance(module_id, str):
        raise ValueError(f"{router_file}: module ids must be strings, got {module_id!r}")
    if module_id in ("", "."):
        return router_dir
    parts = Path(module_id).parts
    if Path(module_id).is_absolute() or ".." in parts:
        raise ValueError(f"{router_file}: module id {module_id!r} must be a sub-folder name inside the model")
    folder = router_dir / module_id
    if not folder.is_dir():
        raise ValueError(f"{router_file}: module {module_id!r} has no sub-folder {folder}")
    return folder


def _load_module_config(folder: Path, name: str, what: str) -> dict[str, Any]:
    path = folder / name
    return read_json_object(path, what) if path.is_file() else {}


# ----------------------------------------------------------------------------- the reader
def read_sparse_encoder_dir(path: str | Path, require_weights: bool = True) -> SparseEncoderSpec:
    """Parse a SparseEncoder directory into a ``SparseEncoderSpec``.

    Raises ``ValueError`` (or ``FileNotFoundError`` for a missing file) naming the offending file for: not
    a directory, no ``modules.json``, malformed JSON, a module list that is not a single Router, an
    unknown module type, a missing module sub-folder or weight file, or routes other than
    ``document: [MLMTransformer, SpladePooling]`` with ``query: [SparseStaticEmbedding]`` (inference-free) or
    ``query: [MLMTransformer, SpladePooling]`` in folders of its own (asymmetric).
    ``require_weights=False`` accepts a directory whose weight files were removed (a checkpoint template).
    A folder without ``modules.json`` but with ``config.json`` and ``idf.json`` and/or
    ``query_token_weights.txt`` in its root is a bare OpenSearch folder (layout ``"opensearch_bare"``).
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory (expected a sentence-transformers SparseEncoder folder)")
    modules_path = root / MODULES_FILE
    if not modules_path.is_file() and _opensearch_bare_files(root) is not None:
        return _read_opensearch_bare(root)
    if not modules_path.is_file():
        raise FileNotFoundError(f"{modules_path}: not found; {root} is not a sentence-transformers model folder")
    modules = read_json(modules_path, "module list")
    if isinstance(modules, list) and len(modules) == 2 and all(isinstance(m, dict) for m in modules):
        return _read_symmetric(root, modules_path, modules)
    if not isinstance(modules, list) or len(modules) != 1 or not isinstance(modules[0], dict):
        n = len(modules) if isinstance(modules, list) else type(modules).__name__
        raise ValueError(f"{modules_path}: expected a Router module (inference-free) or [MLMTransformer, "
                         f"SpladePooling] (symmetric), found {n} entries")
    router_entry = modules[0]
    router_type = router_entry.get("type")
    if _ROLE_OF_TYPE.get(router_type) != "router":
        raise ValueError(f"{modules_path}: the only module must be a Router, found type {router_type!r}; "
                         "a one-module SparseEncoder is a query/document Router (inference-free or asymmetric)")
    router_path = router_entry.get("path", "")
    if not isinstance(router_path, str):
        raise ValueError(f"{modules_path}: module path must be a string, got {router_path!r}")
    router_dir = _module_folder(root, router_path, modules_path)
    dialects = {_DIALECT_OF_TYPE[router_type]}

    router_file = router_dir / ROUTER_CONFIG_FILE
    router_cfg = read_json_object(router_file, "Router config")
    types, structure = router_cfg.get("types"), router_cfg.get("structure")
    params = router_cfg.get("parameters") or {}
    if not isinstance(types, dict) or not isinstance(structure, dict) or not isinstance(params, dict):
        raise ValueError(f"{router_file}: 'types' and 'structure' must be objects (and 'parameters' an object)")
    for route, ids in structure.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{router_file}: structure[{route!r}] must be a list of module ids")
        for module_id in ids:
            if module_id not in types:
                raise ValueError(f"{router_file}: module {module_id!r} of route {route!r} has no entry in 'types'")
    roles: dict[str, str] = {}
    for module_id, type_string in types.items():
        role = _ROLE_OF_TYPE.get(type_string)
        if role is None or role == "router":
            raise ValueError(f"{router_file}: unknown module type {type_string!r} for module {module_id!r}; "
                             "expected SparseStaticEmbedding, MLMTransformer (or a fill-mask Transformer) "
                             "or SpladePooling")
        roles[module_id] = role
        dialects.add(_DIALECT_OF_TYPE[type_string])

    found = {route: [_ROLE_NAMES[roles[i]] for i in ids] for route, ids in structure.items()}
    query_ids, doc_ids = structure.get(QUERY_ROUTE), structure.get(DOCUMENT_ROUTE)

    def is_mlm_route(ids):
        return len(ids) == 2 and roles[ids[0]] in ("mlm", "transformer") and roles[ids[1]] == "pooling"

    if (set(structure) != {QUERY_ROUTE, DOCUMENT_ROUTE} or not is_mlm_route(doc_ids)
            or not ((len(query_ids) == 1 and roles[query_ids[0]] == "static") or is_mlm_route(query_ids))):
        raise ValueError(
            f"{router_file}: unsupported architecture {found}; a Router must have a document route [MLMTransformer, "
            "SpladePooling] and a query route [SparseStaticEmbedding] (inference-free) or [MLMTransformer, "
            "SpladePooling] (asymmetric)")

    default_route = params.get("default_route")
    if default_route is None:
        default_route = DOCUMENT_ROUTE
    if default_route not in structure:
        raise ValueError(f"{router_file}: default_route {default_route!r} is not one of the routes {sorted(structure)}")

    document = _read_document_module(_module_folder(router_dir, doc_ids[0], router_file), roles[doc_ids[0]])
    pooling = _read_pooling_module(_module_folder(router_dir, doc_ids[1], router_file))
    layout = "opensearch" if doc_ids[0] in ("", ".") else "st_native"
    st = _read_st_config(root / ST_CONFIG_FILE)
    dialect = _ST6 if _ST6 in dialects else _ST5
    if len(query_ids) == 2:  # asymmetric: an MLM on the query route too
        query_folder = _module_folder(router_dir, query_ids[0], router_file)
        if query_folder == document.folder:
            raise ValueError(f"{router_file}: the query and document routes name the same transformer folder "
                             f"{query_folder}; a model with one MLM for both is symmetric (no Router)")
        query_mlm = _read_document_module(query_folder, roles[query_ids[0]])
        query_pooling = _read_pooling_module(_module_folder(router_dir, query_ids[1], router_file))
        return SparseEncoderSpec(root=root, layout=layout, dialect=dialect, query=None, document=document,
                                 pooling=pooling, default_route=default_route, shape="asymmetric",
                                 query_mlm=query_mlm, query_pooling=query_pooling, **st)
    query = _read_query_module(_module_folder(router_dir, query_ids[0], router_file), root, require_weights)
    return SparseEncoderSpec(root=root, layout=layout, dialect=dialect, query=query,
                             document=document, pooling=pooling, default_route=default_route, **st)


def _read_symmetric(root: Path, modules_path: Path, modules: list[dict]) -> SparseEncoderSpec:
    """A symmetric SPLADE directory: modules [MLMTransformer (or a fill-mask Transformer), SpladePooling]."""
    types = [m.get("type") for m in modules]
    roles = [_ROLE_OF_TYPE.get(t) for t in types]
    if roles[0] not in ("mlm", "transformer") or roles[1] != "pooling":
        raise ValueError(f"{modules_path}: unsupported module list {types}; a two-module SparseEncoder must be "
                         "[MLMTransformer, SpladePooling] (symmetric SPLADE)")
    folders = []
    for entry in modules:
        path = entry.get("path", "")
        if not isinstance(path, str):
            raise ValueError(f"{modules_path}: module path must be a string, got {path!r}")
        folders.append(_module_folder(root, path, modules_path))
    document = _read_document_module(folders[0], roles[0])
    pooling = _read_pooling_module(folders[1])
    st = _read_st_config(root / ST_CONFIG_FILE)
    dialect = _ST6 if _ST6 in {_DIALECT_OF_TYPE[t] for t in types} else _ST5
    return SparseEncoderSpec(root=root, layout="plain" if folders[0] == root else "st_native", dialect=dialect,
                             query=None, document=document, pooling=pooling, shape="symmetric", **st)


def _opensearch_bare_files(root: Path) -> tuple[Path | None, Path | None] | None:
    """(idf.json, query_token_weights.txt), each None if absent, when ``root`` is a bare OpenSearch folder (no
    ``modules.json``, a ``config.json`` and at least one of the two weight tables); None otherwise."""
    if (root / MODULES_FILE).is_file() or not (root / MODULE_CONFIG_FILE).is_file():
        return None
    idf, txt = root / IDF_FILE, root / QUERY_TOKEN_WEIGHTS_FILE
    found = (idf if idf.is_file() else None, txt if txt.is_file() else None)
    return None if found == (None, None) else found


def _read_opensearch_bare(root: Path) -> SparseEncoderSpec:
    """A bare OpenSearch inference-free folder read as the equivalent sentence-transformers Router: the root
    is the document MLM (SpladePooling max + relu, i.e. log1p(relu)) and the query module (its weight
    tables, the document tokenizer). The dialect is reported as "st5" (the folder has none of its own)."""
    idf, txt = _opensearch_bare_files(root)
    document = _read_document_module(root, "mlm")
    query = QueryModuleSpec(folder=root, frozen=False, weight_file=None, json_weights_file=idf, txt_weights_file=txt,
                            opensearch_bare=True)
    return SparseEncoderSpec(root=root, layout="opensearch_bare", dialect=_ST5, query=query, document=document,
                             pooling=PoolingSpec("max", "relu", None), **_read_st_config(root / ST_CONFIG_FILE))


def _read_query_module(folder: Path, root: Path, require_weights: bool = True) -> QueryModuleSpec:
    cfg_path = folder / MODULE_CONFIG_FILE
    cfg = _load_module_config(folder, MODULE_CONFIG_FILE, "SparseStaticEmbedding config")
    frozen = cfg.get("frozen", False)
    if not isinstance(frozen, bool):
        raise ValueError(f"{cfg_path}: 'frozen' must be true or false, got {frozen!r}")
    json_file = None
    json_path = cfg.get("path")
    if json_path is not None and not isinstance(json_path, str):
        raise ValueError(f"{cfg_path}: 'path' must be a string, got {json_path!r}")
    if json_path is not None and json_path.endswith(".json"):
        candidates = [Path(json_path)] if Path(json_path).is_absolute() else [folder / json_path, root / json_path]
        json_file = next((c for c in candidates if c.is_file()), None)
        if json_file is None:
            raise FileNotFoundError(f"{cfg_path}: query weight file {json_path!r} not found "
                                    f"(looked for {', '.join(str(c) for c in candidates)})")
    weight_file = folder / WEIGHT_FILE
    if not weight_file.is_file():
        weight_file = None
        if json_file is None and require_weights:
            pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
            hint = (f" (found {pickles}: pickle files are never loaded; convert them to safetensors first)"
                    if pickles else "")
            raise FileNotFoundError(f"{folder / WEIGHT_FILE}: static query weights not found{hint}")
    return QueryModuleSpec(folder=folder, frozen=frozen, weight_file=weight_file, json_weights_file=json_file)


def _read_document_module(folder: Path, role: str) -> DocumentModuleSpec:
    config_json = folder / MODULE_CONFIG_FILE
    if not config_json.is_file():
        raise FileNotFoundError(f"{config_json}: the document transformer's model config is missing")
    sbert_path = folder / SBERT_CONFIG_FILE
    sbert = _load_module_config(folder, SBERT_CONFIG_FILE, "sentence-transformers module config")
    task = sbert.get("transformer_task")
    if role == "transformer" and task != "fill-mask":
        raise ValueError(f"{sbert_path}: a plain Transformer is a document transformer here only with "
                         f"transformer_task 'fill-mask', found {task!r}; the document route needs an MLM head")
    if role == "mlm" and task is not None and task != "fill-mask":
        raise ValueError(f"{sbert_path}: MLMTransformer with transformer_task {task!r} (expected 'fill-mask')")
    max_len = _optional_positive_int(sbert.get("max_seq_length"), str(sbert_path), "max_seq_length")
    lower = sbert.get("do_lower_case", False)
    if not isinstance(lower, bool):
        raise ValueError(f"{sbert_path}: do_lower_case must be true or false, got {lower!r}")
    return DocumentModuleSpec(folder=folder, max_seq_length=max_len, do_lower_case=lower)


def _read_pooling_module(folder: Path) -> PoolingSpec:
    cfg_path = folder / MODULE_CONFIG_FILE
    cfg = _load_module_config(folder, MODULE_CONFIG_FILE, "SpladePooling config")
    strategy = cfg.get("pooling_strategy", "max")
    activation = cfg.get("activation_function", "relu")
    if strategy not in POOLING_STRATEGIES:
        raise ValueError(f"{cfg_path}: pooling_strategy must be one of {POOLING_STRATEGIES}, got {strategy!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{cfg_path}: activation_function must be one of {ACTIVATIONS}, got {activation!r}")
    dim = cfg.get("embedding_dimension", cfg.get("word_embedding_dimension"))
    dim = _optional_positive_int(dim, str(cfg_path), "embedding_dimension")
    return PoolingSpec(pooling_strategy=strategy, activation_function=activation, embedding_dimension=dim)


def _read_st_config(path: Path) -> dict[str, Any]:
    """``similarity_fn_name``, ``prompts``, ``default_prompt_name``, ``max_active_dims`` (defaults if absent)."""
    cfg = read_json_object(path, "sentence-transformers config") if path.is_file() else {}
    model_type = cfg.get("model_type", "SparseEncoder")
    if model_type != "SparseEncoder":
        raise ValueError(f"{path}: model_type is {model_type!r}; only SparseEncoder folders are supported")
    sim = cfg.get("similarity_fn_name") or "dot"
    if not isinstance(sim, str):
        raise ValueError(f"{path}: similarity_fn_name must be a string, got {sim!r}")
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError(f"{path}: prompts must be an object of strings, got {prompts!r}")
    default_prompt = cfg.get("default_prompt_name")
    if default_prompt is not None and (not isinstance(default_prompt, str) or default_prompt not in prompts):
        raise ValueError(f"{path}: default_prompt_name {default_prompt!r} is not one of the prompts {sorted(prompts)}")
    max_active = _optional_positive_int(cfg.get("max_active_dims"), str(path), "max_active_dims")
    return {"similarity_fn_name": sim, "prompts": dict(prompts), "default_prompt_name": default_prompt,
            "max_active_dims": max_active}


# ----------------------------------------------------------------------------- query weights
def read_query_weights(spec: QueryModuleSpec, tokenizer_vocab: dict[str, int] | None = None, *,
                       unk_token: str = "[UNK]") -> np.ndarray:
    """The static query weight vector, float32 [V] (index = token id).

    From ``spec.json_weights_file`` when set (token → weight JSON, mapped through ``tokenizer_vocab``;
    V = len(tokenizer_vocab); ids not listed get 0; a token missing from the vocabulary lands on
    ``unk_token``'s id, later entries overwriting earlier ones, as sentence-transformers does), else from
    ``spec.weight_file``, which must hold exactly one 1-D floating tensor named ``weight``.

    A bare OpenSearch folder's tables (``idf.json`` / ``query_token_weights.txt``) follow stricter rules
    (``_weights_from_opensearch_bare``): ids not listed get 0, a token outside ``tokenizer_vocab`` is an
    error, and two tables must agree.
    """
    if spec.opensearch_bare:
        return _weights_from_opensearch_bare(spec, tokenizer_vocab)
    if spec.json_weights_file is not None:
        return _weights_from_json(spec.json_weights_file, tokenizer_vocab, unk_token)
    path = spec.weight_file
    if path is None:
        raise FileNotFoundError(f"{spec.folder / WEIGHT_FILE}: static query weights not found")
    header, _, _ = read_header(path)
    if set(header) != {"weight"}:
        raise ValueError(f"{path}: expected exactly one tensor named 'weight', found {sorted(header)}")
    weight = read_safetensors(path)["weight"]
    if weight.ndim != 1 or weight.shape[0] == 0:
        raise ValueError(f"{path}: tensor 'weight' must be 1-D [vocab_size], found shape {list(weight.shape)}")
    if not np.issubdtype(weight.dtype, np.floating) and weight.dtype.name != "bfloat16":
        raise ValueError(f"{path}: tensor 'weight' must be floating point, found {header['weight'].get('dtype')}")
    out = np.array(weight, dtype=np.float32)  # a writable copy, detached from the memory map
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{path}: tensor 'weight' holds non-finite values")
    return out


def _weights_from_json(path: Path, vocab: dict[str, int] | None, unk_token: str) -> np.ndarray:
    if vocab is None:
        raise ValueError(f"{path}: JSON query weights need the tokenizer vocabulary (pass tokenizer_vocab)")
    table = read_json_object(path, "token weight map")
    size = _check_vocab_ids(vocab, path)
    out = np.zeros(size, np.float32)
    unknown = []
    for token, value in table.items():
        _check_json_weight(value, token, path)
        idx = vocab.get(token)
        if idx is None:
            idx = vocab.get(unk_token)
            if idx is None:
                raise ValueError(f"{path}: token {token!r} is not in the vocabulary and there is no {unk_token!r}")
            unknown.append(token)
        out[idx] = value
    if unknown:
        logger.warning("%s: %d tokens are not in the vocabulary and were mapped to %s (e.g. %r)",
                       path, len(unknown), unk_token, unknown[:3])
    return out



def _check_vocab_ids(vocab: dict[str, int], path: Path) -> int:
    """The vocabulary size; a ValueError naming ``path`` (the table read with it) unless the ids are 0..V-1."""
    size = len(vocab)
    if size == 0 or max(vocab.values()) >= size or min(vocab.values()) < 0:
        raise ValueError(f"{path}: the tokenizer vocabulary ids must be 0..{size - 1}")
    return size


def _check_json_weight(value: Any, token: str, path: Path) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: weight of token {token!r} must be a finite number, got {value!r}")


# ----------------------------------------------------------------------------- bare OpenSearch weight tables
def _weights_from_opensearch_bare(spec: QueryModuleSpec, vocab: dict[str, int] | None) -> np.ndarray:
    """The static weight vector of a bare OpenSearch folder: float32 [len(vocab)], 0 where no token is listed;
    from ``idf.json`` and/or ``query_token_weights.txt``, which must then agree token for token."""
    idf, txt = spec.json_weights_file, spec.txt_weights_file
    first = idf if idf is not None else txt
    if vocab is None:
        raise ValueError(f"{first}: the query weight table needs the tokenizer vocabulary (pass tokenizer_vocab)")
    size = _check_vocab_ids(vocab, first)
    tables = {}
    if idf is not None:
        tables[idf] = _bare_idf_json(idf, vocab)
    if txt is not None:
        tables[txt] = _bare_query_token_weights_txt(txt, vocab)
    if idf is not None and txt is not None:
        _check_bare_tables_agree(idf, tables[idf], txt, tables[txt], vocab)
    out = np.zeros(size, np.float32)
    for token, value in tables[first].items():
        out[vocab[token]] = value
    return out


def _bare_idf_json(path: Path, vocab: dict[str, int]) -> dict[str, np.float32]:
    """``idf.json``: a JSON object token → finite number, every token in the tokenizer vocabulary."""
    table = read_json_object(path, "token weight map")
    out = {}
    for token, value in table.items():
        _check_json_weight(value, token, path)
        if token not in vocab:
            raise ValueError(f"{path}: token {token!r} is not in the tokenizer vocabulary; the weight table "
                             "belongs to another tokenizer")
        out[token] = np.float32(value)
    return out


def _bare_query_token_weights_txt(path: Path, vocab: dict[str, int]) -> dict[str, np.float32]:
    """``query_token_weights.txt``: one ``token<TAB>weight`` line per token (UTF-8), each token once and in
    the tokenizer vocabulary, each weight a finite number. Errors name the file and the line number."""
    lines = read_lines(path, encoding="utf-8-sig")
    out: dict[str, np.float32] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.removesuffix("\r").split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}: line {number}: expected 'token<TAB>weight' (two TAB-separated fields), "
                             f"found {len(fields)} field(s): {line[:80]!r}")
        token, raw = fields
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{path}: line {number}: weight {raw!r} of token {token!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}: line {number}: weight {raw!r} of token {token!r} is not finite")
        if token in first_line:
            raise ValueError(f"{path}: line {number}: token {token!r} is listed twice (first on line "
                             f"{first_line[token]})")
        if token not in vocab:
            raise ValueError(f"{path}: line {number}: token {token!r} is not in the tokenizer vocabulary; the "
                             "weight table belongs to another tokenizer")
        first_line[token] = number
        out[token] = np.float32(value)
    return out


def _check_bare_tables_agree(idf: Path, idf_table: dict[str, np.float32], txt: Path,
                             txt_table: dict[str, np.float32], vocab: dict[str, int]) -> None:
    """A ValueError naming both files and the first token (in vocabulary order) listed in only one of them
    or with different float32 weights."""
    differing = sorted((t for t in idf_table.keys() | txt_table.keys() if idf_table.get(t) != txt_table.get(t)),
                       key=vocab.__getitem__)
    if not differing:
        return
    token = differing[0]
    if token not in idf_table:
        what = f"missing {idf.name} entry (it weighs {txt_table[token]} in {txt.name})"
    elif token not in txt_table:
        what = f"missing {txt.name} entry (it weighs {idf_table[token]} in {idf.name})"
    else:
        what = (f"weighs {idf_table[token]} in {idf.name} and {txt_table[token]} in {txt.name} "
                "(as float32)")
    raise ValueError(f"{idf} and {txt} disagree: token {token!r}: {what} ({len(differing)} token(s) differ); "
                     "both weight tables must list the same tokens with the same weights")


# ----------------------------------------------------------------------------- local path or hub id
def resolve_model_path(path_or_hub_id: str) -> Path:
    """A local model directory: ``path_or_hub_id`` itself when it is an existing directory, else a hub id
    (``owner/name``) downloaded with ``huggingface_hub.snapshot_download`` (JSON, safetensors, text and
    markdown files only; never ``.bin``/``.py``/pickle). Raises ``ValueError`` when it is neither, or when
    the hub cannot be reached."""
    if not isinstance(path_or_hub_id, (str, Path)):
        raise TypeError(f"path_or_hub_id must be a str or Path, got {type(path_or_hub_id).__name__}")
    text = str(path_or_hub_id)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise ValueError(f"{local}: not a directory (expected a model folder or a hub id 'owner/name')")
    if not _HUB_ID.match(text) or ".." in text:
        raise ValueError(f"{text!r}: no such directory, and not a Hugging Face hub id of the form 'owner/name'")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise ValueError(f"{text!r}: not a local directory and huggingface_hub is not installed; "
                         "pass a local directory") from None
    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=HUB_ALLOW_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, network: all one clear error
        raise ValueError(f"{text!r} is not a local directory and could not be fetched from the Hugging Face hub "
                         f"({type(exc).__name__}: {exc}); the hub could not be reached or has no such model. "
                         "Pass a local directory instead") from None
