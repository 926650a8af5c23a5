"""jsplade-index: build, grow, search and export an exact sparse retrieval index (one .npz file).

    jsplade-index build  MODEL CORPUS OUT.npz [--batch-size 32] [--max-active-dims K] [--packing] [--overwrite]
    jsplade-index add    MODEL INDEX.npz MORE_CORPUS [--batch-size 32] [--max-active-dims K] [--packing]
    jsplade-index search MODEL INDEX.npz "query text" [...] [-k 10] [--json] [--corpus CORPUS ...]
    jsplade-index export-opensearch MODEL INDEX.npz|CORPUS OUT.ndjson --index-name NAME [--prune-ratio R] [--prune RULE]
                                    [--field F] [--text-field T] [--no-text] [--query TEXT ...] [--overwrite]

MODEL is a sentence-transformers SparseEncoder directory, a jsplade checkpoint directory or a hub id.
CORPUS is a BEIR-format folder (its corpus.jsonl[.gz] is read) or a corpus .jsonl[.gz] file
(``_id``, optional ``title``, ``text``; title and text are joined as in ``jsplade.retrieval.beir``), or, for
``build`` and ``export-opensearch``, a shard directory written by ``jsplade-encode`` (read, not re-encoded;
it must come from MODEL; quantised impacts are divided back by their factor).

The index (``jsplade.retrieval.index.SparseIndex``) holds the document vectors and ids; next to it, ``OUT.npz.json``
records the model and the corpus files it was built from, so that ``search`` can show text snippets and
``add`` reuses the build's --max-active-dims. ``search`` prints, per query, the ranked documents (id, score,
snippet when the corpus is known); ``--json`` prints the same as JSON. ``export-opensearch`` writes an
OpenSearch ``_bulk`` ndjson file (``rank_features`` token -> weight maps) and the index mapping next to it
(OUT.mapping.json), plus neural_sparse query bodies (OUT.queries.json) for each --query.

Every file is written atomically. Errors are reported on stderr as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from jsplade.cli.common import add_verbose_flag, error_line, setup_logging

PROG = "jsplade-index"
MANIFEST_FORMAT = "jsplade.IndexManifest/1"
# Progress bars turn on by themselves for steps over this many texts (the encoder's own rule).
AUTO_PROGRESS_TEXTS = 2000
SNIPPET_CHARS = 100


# ---------------------------------------------------------------- helpers shared with jsplade-eval

def load_encoder(spec: str) -> Any:
    """``SparseEncoder.load(spec)``: a SparseEncoder directory, a jsplade checkpoint directory or a hub id."""
    from jsplade.splade.encoder import SparseEncoder

    return SparseEncoder.load(spec)


def read_corpus(path: str | Path) -> dict[str, str]:
    """id -> text of a BEIR folder's corpus.jsonl[.gz] or of a corpus .jsonl[.gz] file, in file order."""
    from jsplade.retrieval.beir import find_data_file, read_corpus_file

    path = Path(path)
    if path.is_dir():
        file = find_data_file(path, "corpus.jsonl")
    elif path.is_file():
        file = path
    else:
        raise FileNotFoundError(f"{path}: corpus not found (expected a BEIR folder with corpus.jsonl[.gz] or a "
                                "corpus .jsonl[.gz] file)")
    corpus = read_corpus_file(file)
    if not corpus:
        raise ValueError(f"{file}: the corpus has no documents")
    return corpus


def snippet(text: str, width: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, cut to ``width`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1].rstrip() + "…"


# ---------------------------------------------------------------- the manifest next to an index

def manifest_path(index_path: Path) -> Path:
    """``OUT.npz`` -> ``OUT.npz.json``."""
    return index_path.with_name(index_path.name + ".json")


def read_manifest(index_path: Path, n_documents: int) -> dict[str, Any] | None:
    """The index's manifest, or ``None`` (with a note on stderr) when it is missing, unreadable or stale."""
    path = manifest_path(index_path)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"{PROG}: note: ignoring unreadable {path} ({error_line(exc)})", file=sys.stderr)
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("corpora"), list):
        print(f"{PROG}: note: ignoring {path}: not a {MANIFEST_FORMAT} file", file=sys.stderr)
        return None
    if manifest.get("documents") != n_documents:
        print(f"{PROG}: note: ignoring {path}: it describes {manifest.get('documents')} documents, the index "
              f"holds {n_documents}", file=sys.stderr)
        return None
    return manifest


def write_manifest(index_path: Path, model: str, max_active_dims: int | None, corpora: list[dict[str, Any]],
                   n_documents: int) -> None:
    """Write the manifest (model, --max-active-dims, corpus files with their document counts), atomically."""
    from jsplade.files import atomic_write_json

    atomic_write_json(manifest_path(index_path), {
        "format": MANIFEST_FORMAT, "model": model, "max_active_dims": max_active_dims,
        "corpora": corpora, "documents": n_documents})


def manifest_corpora(manifest: dict[str, Any] | None) -> list[str]:
    """The corpus paths a manifest records (entries without a string path are skipped)."""
    entries = (manifest or {}).get("corpora", [])
    return [c["path"] for c in entries if isinstance(c, dict) and isinstance(c.get("path"), str)]


def known_texts(corpus_paths: Sequence[str], wanted: set[str]) -> dict[str, str]:
    """id -> text for the ``wanted`` ids found in the given corpora (missing corpus files are skipped)."""
    texts: dict[str, str] = {}
    for p in corpus_paths:
        try:
            corpus = read_corpus(p)
        except (ValueError, OSError) as exc:
            print(f"{PROG}: note: no snippets from {p} ({error_line(exc)})", file=sys.stderr)
            continue
        texts.update({i: corpus[i] for i in wanted & corpus.keys()})
    return texts


# ---------------------------------------------------------------- commands

def _progress(n_texts: int, no_progress: bool) -> bool | None:
    return False if no_progress else (True if n_texts > AUTO_PROGRESS_TEXTS else None)


def _encode_documents(encoder: Any, corpus: dict[str, str], args: argparse.Namespace,
                      max_active_dims: int | None) -> Any:
    """CSR [N, V] vectors of the corpus texts (corpus order)."""
    return encoder.encode_document(list(corpus.values()), batch_size=args.batch_size,
                                   max_active_dims=max_active_dims, packing=args.packing,
                                   show_progress_bar=_progress(len(corpus), args.no_progress))


def is_shard_dir(path: str | Path) -> bool:
    """A directory written by jsplade-encode (it holds part files or a shard manifest)."""
    path = Path(path)
    return path.is_dir() and ((path / "manifest.json").is_file() or any(path.glob("part-*.safetensors")))


def read_shard_vectors(path: str | Path, encoder: Any) -> tuple[list[str], Any]:
    """(ids, float32 vectors) of a finished shard directory; it must have been encoded by ``encoder``."""
    from jsplade.retrieval.corpus import load_encoded
    from jsplade.retrieval.shards import read_shards

    model = read_shards(path).settings["model"]
    if model != encoder.fingerprint():
        raise ValueError(f"{path}: encoded by another model ({model}) than the one given ({encoder.fingerprint()})")
    return load_encoded(path)


def _check_vocab(encoder: Any, index: Any, index_path: Path) -> None:
    if encoder.vocab_size != index.vocab_size:
        raise ValueError(f"{index_path}: the index has vocabulary size {index.vocab_size} but the model has "
                         f"{encoder.vocab_size}; use the model that built the index")


def _check_new_output(path: Path, overwrite: bool, what: str) -> None:
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a {what} file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: directory {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (pass --overwrite to replace it)")


def _load_index(path: Path) -> Any:
    from jsplade.retrieval.index import SparseIndex

    return SparseIndex.load(path)


def model_key(spec: str) -> str:
    """How a model is recorded in the manifest: the absolute path of a local folder, else the hub id."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def _warn_model(manifest: dict[str, Any] | None, model: str) -> None:
    if manifest is not None and manifest.get("model") not in (None, model_key(model)):
        print(f"{PROG}: warning: the index was built with model {manifest['model']!r}, not {model!r}",
              file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> str:
    """Encode a corpus and write a new index (+ manifest); returns the summary line."""
    from jsplade.retrieval.index import SparseIndex

    out = Path(args.out)
    _check_new_output(out, args.overwrite, "index (.npz)")
    if is_shard_dir(args.corpus):
        encoder = load_encoder(args.model)
        ids, encodings = read_shard_vectors(args.corpus, encoder)
        print(f"{PROG}: indexing {len(ids)} encoded documents from {args.corpus}", file=sys.stderr)
        corpora = []
    else:
        corpus = read_corpus(args.corpus)
        encoder = load_encoder(args.model)
        print(f"{PROG}: encoding {len(corpus)} documents", file=sys.stderr)
        ids, encodings = list(corpus), _encode_documents(encoder, corpus, args, args.max_active_dims)
        corpora = [{"path": str(Path(args.corpus).resolve()), "documents": len(corpus)}]
    index = SparseIndex(encoder.vocab_size)
    index.add(ids, encodings)
    index.save(out)
    write_manifest(out, model_key(args.model), args.max_active_dims, corpora, len(index))
    m = index.matrix
    return (f"wrote {out}: {len(index)} documents, vocabulary {index.vocab_size}, {m.nnz} non-zeros "
            f"({m.nnz / max(len(index), 1):.1f} per document)")


def cmd_add(args: argparse.Namespace) -> str:
    """Encode more documents into an existing index (rewritten atomically); returns the summary line."""
    path = Path(args.index)
    index = _load_index(path)
    manifest = read_manifest(path, len(index))
    corpus = read_corpus(args.corpus)
    present = set(index.ids)
    clash = [i for i in corpus if i in present]
    if clash:
        raise ValueError(f"{args.corpus}: {len(clash)} document id(s) are already in {path} (first: {clash[0]!r}); "
                         "nothing was added")
    max_active_dims = args.max_active_dims
    if max_active_dims is None and manifest is not None:
        max_active_dims = manifest.get("max_active_dims")
    encoder = load_encoder(args.model)
    _check_vocab(encoder, index, path)
    _warn_model(manifest, args.model)
    print(f"{PROG}: encoding {len(corpus)} documents", file=sys.stderr)
    before = len(index)
    index.add(list(corpus), _encode_documents(encoder, corpus, args, max_active_dims))
    index.save(path)
    corpora = list(manifest["corpora"]) if manifest is not None else []
    corpora.append({"path": str(Path(args.corpus).resolve()), "documents": len(corpus)})
    model = (manifest or {}).get("model") or model_key(args.model)
    write_manifest(path, model, max_active_dims, corpora, len(index))
    return f"wrote {path}: added {len(index) - before} documents, {len(index)} in all"


def cmd_search(args: argparse.Namespace) -> str:
    """Rank the index for each query; prints the results and returns the summary line."""
    import numpy as np

    if args.top_k < 1:
        raise ValueError(f"-k must be a positive integer, got {args.top_k}")
    for i, q in enumerate(args.queries):
        if not q.strip():
            raise ValueError(f"query {i + 1} is empty; give a query text")
    path = Path(args.index)
    index = _load_index(path)
    manifest = read_manifest(path, len(index))
    encoder = load_encoder(args.model)
    _check_vocab(encoder, index, path)
    _warn_model(manifest, args.model)
    q_QxV = encoder.encode_query(list(args.queries), max_active_dims=args.max_active_dims)
    ids, scores_QxK = index.search(q_QxV, args.top_k)
    corpora = args.corpus if args.corpus else manifest_corpora(manifest)
    texts = known_texts(corpora, {d for row in ids for d in row}) if corpora else {}
    active = np.diff(q_QxV.indptr)
    report = []
    for qi, text in enumerate(args.queries):
        hits = []
        for rank, (doc_id, score) in enumerate(zip(ids[qi], scores_QxK[qi]), start=1):
            hit: dict[str, Any] = {"rank": rank, "id": doc_id, "score": float(score)}
            if doc_id in texts:
                hit["text"] = texts[doc_id]
            hits.append(hit)
        report.append({"query": text, "active_dims": int(active[qi]), "results": hits})
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return ""
    for qi, entry in enumerate(report):
        print(f"query {qi + 1}/{len(report)}: {entry['query']!r}  ({entry['active_dims']} active dims)")
        if not entry["results"]:
            print("   (the index is empty)")
        width = max((len(h["id"]) for h in entry["results"]), default=0)
        for h in entry["results"]:
            line = f"  {h['rank']:3d}. {h['id']:<{width}}  {h['score']:12.6f}"
            print(line + (f"  {snippet(h['text'])}" if "text" in h else ""))
        print()
    queries = "query" if len(report) == 1 else "queries"
    return f"searched {len(index)} documents for {len(report)} {queries} (k={args.top_k})"


def cmd_export(args: argparse.Namespace) -> str:
    """Write the bulk ndjson, the mapping and optional query bodies; returns the summary line."""
    from jsplade.retrieval.opensearch import query_body, write_bulk_ndjson, write_index_mapping

    out = Path(args.out)
    stem = out.name[:-len(".ndjson")] if out.name.endswith(".ndjson") and out.name != ".ndjson" else out.name
    mapping = out.with_name(stem + ".mapping.json")
    queries_out = out.with_name(stem + ".queries.json")
    _check_new_output(out, args.overwrite, "ndjson")
    _check_new_output(mapping, args.overwrite, "mapping JSON")
    if args.query:
        _check_new_output(queries_out, args.overwrite, "query JSON")
    if args.prune_ratio is not None and not 0.0 <= args.prune_ratio < 1.0:
        raise ValueError(f"--prune-ratio must be in [0, 1), got {args.prune_ratio}")
    source = Path(args.source)
    texts: list[str] | None
    if source.is_file() and source.name.endswith(".npz"):
        index = _load_index(source)
        manifest = read_manifest(source, len(index))
        encoder = load_encoder(args.model)
        _check_vocab(encoder, index, source)
        ids, encodings = index.ids, index.matrix
        texts = None
        if not args.no_text and manifest is not None:
            known = known_texts(manifest_corpora(manifest), set(ids))
            texts = [known[i] for i in ids] if len(known) == len(ids) else None
        if texts is None and not args.no_text:
            print(f"{PROG}: note: the index's corpus texts are not available; documents carry vectors only",
                  file=sys.stderr)
    elif is_shard_dir(source):
        encoder = load_encoder(args.model)
        ids, encodings = read_shard_vectors(source, encoder)
        texts = None
        if not args.no_text:
            print(f"{PROG}: note: encoded shards hold no texts; documents carry vectors only", file=sys.stderr)
    else:
        corpus = read_corpus(source)
        encoder = load_encoder(args.model)
        print(f"{PROG}: encoding {len(corpus)} documents", file=sys.stderr)
        ids, encodings = list(corpus), _encode_documents(encoder, corpus, args, args.max_active_dims)
        texts = None if args.no_text else list(corpus.values())
    n = write_bulk_ndjson(out, args.index_name, ids, encodings, encoder.tokenizer, texts=texts, field=args.field,
                          text_field=args.text_field, prune_ratio=args.prune_ratio, pruning=args.prune)
    write_index_mapping(mapping, field=args.field, text_field=args.text_field)
    written = [str(out), str(mapping)]
    if args.query:
        from jsplade.files import atomic_write_json

        q = encoder.encode_query(list(args.query), max_active_dims=args.max_active_dims)
        bodies = [{"query": text, "body": query_body(q[i], encoder.tokenizer, field=args.field, size=args.size,
                                                     prune_ratio=args.prune_ratio, pruning=args.prune)}
                  for i, text in enumerate(args.query)]
        atomic_write_json(queries_out, bodies)
        written.append(str(queries_out))
    return f"wrote {', '.join(written)}: {n} documents for index {args.index_name!r}"


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{build,add,search,export-opensearch}")

    def encoding_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=int, default=32, help="documents per encoder batch (default 32)")
        p.add_argument("--max-active-dims", type=int, default=None, metavar="K",
                       help="keep the K largest weights of every document vector (default: the model's)")
        p.add_argument("--packing", action="store_true", help="encode documents with sequence packing")
        p.add_argument("--no-progress", action="store_true",
                       help=f"no progress bar (default: a bar when encoding over {AUTO_PROGRESS_TEXTS} documents)")

    build = sub.add_parser("build", help="encode a corpus into a new index file",
                           description="Encode CORPUS with MODEL and write the index OUT.npz (and OUT.npz.json).")
    build.add_argument("model", help="SparseEncoder directory, jsplade checkpoint directory or hub id")
    build.add_argument("corpus", help="BEIR folder or corpus .jsonl[.gz] file")
    build.add_argument("out", help="index file to write (.npz)")
    encoding_options(build)
    build.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    add = sub.add_parser("add", help="encode more documents into an existing index",
                         description="Encode MORE_CORPUS with MODEL and append it to INDEX.npz (rewritten "
                                     "atomically). Ids already in the index are refused before any encoding.")
    add.add_argument("model", help="the model that built the index")
    add.add_argument("index", help="index file (.npz)")
    add.add_argument("corpus", metavar="more_corpus", help="BEIR folder or corpus .jsonl[.gz] file")
    encoding_options(add)

    search = sub.add_parser("search", help="rank the index for one or more queries",
                            description="Exact top-k by dot product for each query text.")
    search.add_argument("model", help="the model that built the index")
    search.add_argument("index", help="index file (.npz)")
    search.add_argument("queries", nargs="+", metavar="query", help="query text(s)")
    search.add_argument("-k", "--top-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument("--corpus", action="append", default=None,
                        help="corpus to take snippets from (repeatable; default: the corpora recorded at build)")
    search.add_argument("--max-active-dims", type=int, default=None, metavar="K",
                        help="keep the K largest weights of every query vector")

    export = sub.add_parser("export-opensearch", help="write OpenSearch bulk ndjson + index mapping",
                            description="Write an OpenSearch _bulk ndjson file of rank_features documents from an "
                                        "index file or a corpus (encoded with MODEL), the index mapping "
                                        "(OUT.mapping.json) and, for each --query, a neural_sparse query body "
                                        "(OUT.queries.json).")
    export.add_argument("model", help="the model (its tokenizer names the features)")
    export.add_argument("source", help="index file (.npz) or corpus (BEIR folder or .jsonl[.gz] file)")
    export.add_argument("out", help="ndjson file to write")
    export.add_argument("--index-name", required=True, help="OpenSearch index name in the bulk action lines")
    export.add_argument("--field", default="passage_embedding", help="rank_features field (default passage_embedding)")
    export.add_argument("--text-field", default="text", help="text field (default text)")
    export.add_argument("--no-text", action="store_true", help="do not store the document texts")
    export.add_argument("--prune-ratio", type=float, default=None, metavar="R",
                        help="drop weights below R x the row's largest weight (OpenSearch max_ratio pruning)")
    export.add_argument("--prune", default=None, metavar="RULE",
                        help="prune every vector: top_k:K, max_ratio:R, abs_value:T or alpha_mass:A "
                             "(jsplade.splade.pruning, OpenSearch's definitions)")
    export.add_argument("--query", action="append", default=None, help="also write a query body for this text")
    export.add_argument("--size", type=int, default=None, help="'size' of the query bodies")
    export.add_argument("--overwrite", action="store_true", help="replace existing output files")
    encoding_options(export)
    for p in (build, add, search, export):
        add_verbose_flag(p)
    return parser


COMMANDS = {"build": cmd_build, "add": cmd_add, "search": cmd_search, "export-opensearch": cmd_export}


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit code (0 success, 2 bad input)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        for option in ("batch_size", "max_active_dims", "size"):
            value = getattr(args, option, None)
            if value is not None and value < 1:
                raise ValueError(f"--{option.replace('_', '-')} must be a positive integer, got {value}")
        summary = COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"{PROG}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    if summary:
        print(summary, file=sys.stderr if args.command == "search" else sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
