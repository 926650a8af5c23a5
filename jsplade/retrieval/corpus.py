"""Corpus-scale encoding: a corpus read lazily, encoded part by part (all local devices, every process of a
multi-host run), pruned / quantised, and written as shards (``jsplade.retrieval.shards``) with resume.

Input (``iter_corpus``): a BEIR/MTEB folder (its ``corpus.jsonl[.gz]``), or JSON-lines / Parquet / Arrow
files, a directory or glob of them, or a ``datasets.save_to_disk`` folder (``jsplade.files.list_shards``).
A row has an id (``_id``, else ``id``; a string or an integer) and a ``text``, with an optional ``title``
joined in front by a space, as ``jsplade.retrieval.beir`` does. Rows are read one JSON line / row group /
record batch at a time.

``encode_corpus(encoder, corpus, out)`` cuts the rows into parts of ``shard_size`` rows in corpus order and,
for each part that is not already on disk under the same settings, tokenizes it, encodes it with
``encoder.encode_document_ids`` (data-parallel over ``encoder.devices``; documents are sorted by length and
batched within consecutive windows of 2,048, the unit of progress), applies ``max_active_dims``, then
the pruning rule, then the quantisation (``jsplade.splade.pruning``), and writes the part atomically. After the
last part, the parts are checked for repeated ids (flat memory: hashed buckets on disk) and
``manifest.json`` is written. Memory holds one part, whatever the corpus size.

Resume: parts already written under the same settings are kept; temporaries of a killed write are removed;
the missing parts are encoded again. A part's bytes depend only on its rows and the settings, so the
directory of a killed-and-rerun command is byte-identical to that of an uninterrupted one. A directory
written under other settings (another model, pruning, quantisation, shard size, ...) is refused.

``prune_shards(src, out, pruning=..., quantization=...)`` rewrites an unpruned directory under another rule
without encoding again (the same bytes as encoding with that rule).

Multi-host: with P processes (``jax.process_count()``), process p encodes the parts k with k % P == p (every
process reads the corpus, only its own rows are tokenized and encoded); the processes meet at a barrier, and
process 0 checks the ids and writes the manifest. The directory must be on a file system all processes see.

Bad input is refused with the file and row named: a row without id or text, a non-string text, an empty
text (``on_empty="error"``, the default; ``"skip"`` leaves such rows out and counts them), a repeated id
(within a part at once, across parts before the manifest is written).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp

from jsplade.retrieval.beir import corpus_record
from jsplade.files import ArrowShard, ParquetShard, jsonl_lines, list_shards, shard_kind
from jsplade.retrieval import shards as fmt
from jsplade.splade.pruning import Pruning, Quantization
from jsplade.splade.sparse import check_max_active_dims, topk_csr_rows

__all__ = ["CorpusRow", "corpus_files", "iter_corpus", "count_corpus", "encode_corpus", "EncodeReport",
           "load_encoded", "prune_shards", "ON_EMPTY"]

logger = logging.getLogger("jsplade")
ON_EMPTY = ("error", "skip")
# Documents sorted by length and batched together (one window at a time, so progress moves within a part).
_SORT_WINDOW = 2048
_TMP_RE = re.compile(r"^\.part-\d+\.safetensors\..*\.tmp$")


@dataclass(frozen=True)
class CorpusRow:
    id: str
    text: str
    where: str  # "file:line" or "file:row r" for error messages


def corpus_files(source: Any) -> list[Path]:
    """The files of a corpus source: a BEIR folder's corpus.jsonl[.gz], else ``list_shards(source)``."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        folder = Path(source)
        beir = [folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).is_file()]
        if len(beir) == 2:
            raise ValueError(f"{folder}: both corpus.jsonl and corpus.jsonl.gz exist; keep only one")
        if beir:
            return beir
    if isinstance(source, (str, Path)) and not Path(source).exists() and not any(c in str(source) for c in "*?["):
        raise FileNotFoundError(f"{source}: corpus not found (a BEIR folder, JSON-lines / Parquet / Arrow files, "
                                "a directory or glob of them, or a datasets folder)")
    return list_shards(source)


def _row(obj: dict, where: str) -> CorpusRow:
    key = "_id" if "_id" in obj else "id" if "id" in obj else None
    if key is None:
        raise ValueError(f"{where}: no '_id' (or 'id') field")
    if isinstance(obj[key], np.integer):
        obj = dict(obj, **{key: int(obj[key])})
    doc_id, text = corpus_record(obj, where, key)
    return CorpusRow(doc_id, text, where)


def iter_corpus(source: Any) -> Iterator[CorpusRow]:
    """The rows of a corpus in order, read lazily (module docstring)."""
    for path in corpus_files(source):
        kind = shard_kind(path) or "arrow"
        if kind == "jsonl":
            for line_no, line in jsonl_lines(path):
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: malformed JSON line ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{where}: expected a JSON object, found {type(obj).__name__}")
                yield _row(obj, where)
            continue
        shard = ParquetShard(path) if kind == "parquet" else ArrowShard(path)
        try:
            names = shard.names
            key = "_id" if "_id" in names else "id" if "id" in names else None
            if key is None or "text" not in names:
                raise ValueError(f"{path}: a corpus table needs an '_id' (or 'id') and a 'text' column, "
                                 f"has {names}")
            cols = [key, "text"] + (["title"] if "title" in names else [])
            for first, n, load in shard.chunks(cols):
                table = load()
                columns = [table.column(c).to_pylist() for c in cols]
                for r in range(n):
                    where = f"{path}: row {first + r}"
                    obj = {c: columns[j][r] for j, c in enumerate(cols)}
                    if obj[key] is None:
                        raise ValueError(f"{where}: missing '{key}'")
                    if obj["text"] is None:
                        raise ValueError(f"{where}: missing 'text'")
                    yield _row(obj, where)
        finally:
            shard.close()


def count_corpus(source: Any) -> int:
    """The number of rows (Parquet / Arrow from their metadata; JSON lines: the non-blank lines)."""
    total = 0
    for path in corpus_files(source):
        kind = shard_kind(path) or "arrow"
        if kind == "jsonl":
            total += sum(1 for _, line in jsonl_lines(path) if line.strip())
        elif kind == "parquet":
            shard = ParquetShard(path)
            total += sum(shard.sizes)
            shard.close()
        else:
            shard = ArrowShard(path)
            total += sum(n for _, n, _ in shard.chunks([]))
            shard.close()
    return total


@dataclass
class EncodeReport:
    """What ``encode_corpus`` did: parts written now and kept from before, documents, tokens, time."""

    folder: Path
    n_docs: int
    n_parts: int
    parts_written: int
    parts_kept: int
    skipped_empty: int
    tokens: int
    seconds: float
    manifest: dict | None  # None on processes other than 0

    @property
    def docs_per_second(self) -> float:
        return self.n_docs_encoded / self.seconds if self.seconds > 0 else 0.0

    n_docs_encoded: int = 0

    def summary(self) -> str:
        return (f"{self.folder}: {self.n_docs:,} documents in {self.n_parts} parts ({self.parts_written} written, "
                f"{self.parts_kept} kept); encoded {self.n_docs_encoded:,} documents, {self.tokens:,} tokens in "
                f"{self.seconds:.1f} s ({self.docs_per_second:,.1f} docs/s, "
                f"{self.tokens / max(self.seconds, 1e-9):,.0f} tokens/s)")


def _settings(encoder: Any, *, shard_size: int, batch_size: int, max_active_dims: int | None, pruning: Pruning,
              quantization: Quantization | None, on_empty: str, packing: bool, pack_length: int) -> dict:
    return {"format": fmt.PART_FORMAT, "model": encoder.fingerprint(), "vocab_size": int(encoder.vocab_size),
            "max_seq_length": int(encoder.max_seq_length), "max_active_dims": max_active_dims,
            "pruning": pruning.to_dict(), "quantization": None if quantization is None else quantization.to_dict(),
            "on_empty": on_empty, "shard_size": shard_size, "batch_size": batch_size,
            "packing": {"pack_length": pack_length} if packing else None, "devices": len(encoder.devices)}


def _describe_difference(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys)


def _existing_parts(out: Path, settings: dict, overwrite: bool) -> dict[int, Path]:
    """Parts already in ``out`` under ``settings`` (others refused), after removing stale temporaries."""
    kept: dict[int, Path] = {}
    mpath = out / fmt.MANIFEST_NAME
    entries = sorted(out.iterdir())
    for p in entries:
        if _TMP_RE.match(p.name) or p.name.startswith(".dupcheck-"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    for p in entries:
        k = fmt.part_index(p.name)
        if k is None or not p.exists():
            continue
        try:
            _, theirs = fmt.part_settings(p)
        except ValueError:
            if overwrite:
                p.unlink()
                continue
            raise
        if theirs != settings:
            if overwrite:
                p.unlink()
                continue
            raise ValueError(f"{out}: {p.name} was written under other settings ({_describe_difference(theirs, settings)}); "
                             "parts are never mixed: use a new output directory, or --overwrite to replace them")
        kept[k] = p
    if mpath.exists():
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        if manifest.get("settings") != settings:
            if not overwrite:
                raise ValueError(f"{out}: a finished shard directory written under other settings "
                                 f"({_describe_difference(manifest.get('settings', {}), settings)}); use a new "
                                 "output directory, or --overwrite to replace it")
            mpath.unlink()
    return kept


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir()
                   if not (fmt.part_index(p.name) is not None or p.name == fmt.MANIFEST_NAME or _TMP_RE.match(p.name)
                           or p.name.startswith(".dupcheck-"))]
        if foreign:
            raise ValueError(f"{out}: not a shard directory (holds {sorted(foreign)[:3]}); choose an empty or new "
                             "directory")


def _barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def encode_corpus(encoder: Any, corpus: Any, out: str | Path, *, shard_size: int = 10000, batch_size: int = 32,
                  max_active_dims: int | None = None, pruning: Pruning | str | None = None,
                  quantization: Quantization | str | None = None, on_empty: str = "error", packing: bool = False,
                  pack_length: int = 512, overwrite: bool = False, show_progress_bar: bool | None = None,
                  process_index: int | None = None, process_count: int | None = None) -> EncodeReport:
    """Encode ``corpus`` (see ``iter_corpus``) into the shard directory ``out`` (module docstring)."""
    import jax

    t0 = time.perf_counter()
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    k = check_max_active_dims(max_active_dims) or encoder.max_active_dims
    pruning = Pruning.parse(pruning) if isinstance(pruning, str) else (pruning or Pruning())
    quantization = Quantization.parse(quantization) if isinstance(quantization, str) else quantization
    P = jax.process_count() if process_count is None else int(process_count)
    p = jax.process_index() if process_index is None else int(process_index)
    out = Path(out)
    files = corpus_files(corpus)  # fails early on a missing corpus
    _check_output(out)
    settings = _settings(encoder, shard_size=int(shard_size), batch_size=int(batch_size), max_active_dims=k,
                         pruning=pruning, quantization=quantization, on_empty=on_empty, packing=packing,
                         pack_length=int(pack_length))
    if p == 0:
        out.mkdir(parents=True, exist_ok=True)
    _barrier("jsplade-encode-start")
    kept = _existing_parts(out, settings, overwrite) if p == 0 else {}
    _barrier("jsplade-encode-checked")
    if p != 0:
        kept = _existing_parts(out, settings, False)
    total = count_corpus(files) if show_progress_bar is not False else None
    progress = None
    if show_progress_bar is not False and p == 0:
        from tqdm.auto import tqdm

        progress = tqdm(total=total, desc="Encoding corpus", unit="doc", smoothing=0.1)
    report = EncodeReport(out, 0, 0, 0, 0, 0, 0, 0.0, None)
    t_encode = time.perf_counter()

    def advance(n_docs: int) -> None:
        if progress is not None:
            elapsed = time.perf_counter() - t_encode
            progress.set_postfix_str(f"{report.tokens / max(elapsed, 1e-9):,.0f} tok/s (process 0)", refresh=False)
            progress.update(n_docs)

    def finish_part(part: int, rows: list[CorpusRow], first_row: int) -> None:
        mine = part % P == p
        if part in kept:
            report.parts_kept += mine
        elif mine:
            _encode_part(encoder, rows, part, first_row, settings, k, pruning, quantization, batch_size, packing,
                         pack_length, out, report, advance)
            report.parts_written += 1
            return
        advance(len(rows))

    rows: list[CorpusRow] = []
    part, first_row, seen = 0, 0, {}
    for row in iter_corpus(files):
        if not row.text.strip():
            if on_empty == "error":
                raise ValueError(f"{row.where}: document {row.id!r} has an empty text; remove it, or pass "
                                 "on_empty='skip' (--on-empty skip) to leave such documents out")
            report.skipped_empty += 1
            continue
        if row.id in seen:
            raise ValueError(f"{row.where}: duplicate document id {row.id!r} (first at {seen[row.id]})")
        seen[row.id] = row.where
        rows.append(row)
        if len(rows) == shard_size:
            finish_part(part, rows, first_row)
            part, first_row, rows, seen = part + 1, first_row + len(rows), [], {}
    if rows or part == 0:
        if not rows:
            raise ValueError(f"{files[0]}: the corpus has no documents")
        finish_part(part, rows, first_row)
        part += 1
    if progress is not None:
        progress.close()
    report.n_parts = part
    report.n_docs = first_row + len(rows)
    report.seconds = time.perf_counter() - t0
    _barrier("jsplade-encode-parts")
    if p == 0:
        paths = [out / fmt.part_name(j) for j in range(part)]
        missing = [x.name for x in paths if not x.is_file()]
        if missing:
            raise RuntimeError(f"{out}: parts {missing[:5]} are missing after every process finished")
        on_disk = [(fmt.part_index(x.name), x.name) for x in out.iterdir()]
        extra = sorted(name for k, name in on_disk if k is not None and k >= part)
        if extra:
            raise ValueError(f"{out}: holds parts beyond the corpus's {part} ({extra[:3]}): the corpus changed "
                             "since they were written; use a new output directory")
        dup = fmt.find_duplicate_ids(paths)
        if dup is not None:
            doc_id, (pa, ra), (pb, rb) = dup
            raise ValueError(f"duplicate document id {doc_id!r}: row {ra} of {fmt.part_name(pa)} and row {rb} of "
                             f"{fmt.part_name(pb)} (corpus rows {pa * shard_size + ra} and {pb * shard_size + rb}, "
                             f"counting the kept rows); the parts are kept but {out} has no manifest")
        report.manifest = fmt.write_manifest(out, settings, encoder.vocab_size, [fmt.manifest_entry(x) for x in paths])
    _barrier("jsplade-encode-done")
    report.seconds = time.perf_counter() - t0
    return report


def _encode_part(encoder, rows, part, first_row, settings, k, pruning, quantization, batch_size, packing,
                 pack_length, out, report, advance) -> None:
    ids, n_truncated = encoder.tokenize_documents([r.text for r in rows])
    if n_truncated:
        logger.info("part %d: %d of %d documents were truncated to max_seq_length=%d", part, n_truncated, len(rows),
                    encoder.max_seq_length)
    pieces = []
    for lo in range(0, len(ids), _SORT_WINDOW):  # length-sorted batching within fixed windows: progress per window
        chunk = ids[lo:lo + _SORT_WINDOW]
        pieces.append(encoder.encode_document_ids(chunk, batch_size, k, show_progress_bar=False, packing=packing,
                                                  pack_length=pack_length))
        report.tokens += int(sum(len(x) for x in chunk))
        advance(len(chunk))
    m = sp.vstack(pieces, format="csr") if len(pieces) > 1 else pieces[0]
    m = pruning.apply(topk_csr_rows(m, k))
    if quantization is not None:
        m = quantization.quantize(m)
    n_tokens = [len(x) for x in ids]
    data = fmt.encode_part([r.id for r in rows], m, n_tokens, part=part, first_row=first_row, settings=settings)
    fmt.write_part(out / fmt.part_name(part), data)
    report.n_docs_encoded += len(rows)


def load_encoded(folder: str | Path) -> tuple[list[str], sp.csr_matrix]:
    """(ids, float32 vectors) of a finished shard directory, impacts divided back by the quantisation
    factor when the directory is quantised."""
    ids: list[str] = []
    parts = []
    shards = fmt.read_shards(folder)
    for part_ids, m in shards.iter_vectors():
        ids += part_ids
        parts.append(m)
    return ids, sp.vstack(parts, format="csr", dtype=np.float32) if parts else sp.csr_matrix(
        (0, shards.vocab_size), dtype=np.float32)


def prune_shards(src: str | Path, out: str | Path, *, pruning: Pruning | str | None = None,
                 quantization: Quantization | str | None = None, overwrite: bool = False) -> dict:
    """Write ``out``: the shard directory ``src`` (unpruned, unquantised) with another pruning rule and / or
    quantisation, without encoding again. Its bytes equal those of ``encode_corpus`` run with these settings
    (the rule runs on the same per-part vectors); parts already in ``out`` under the same settings are
    kept, as in a resumed encode. Returns the new manifest."""
    shards = fmt.read_shards(src)
    s = shards.settings
    if s.get("pruning", {}).get("kind", "none") != "none" or s.get("quantization") is not None:
        raise ValueError(f"{src}: already pruned or quantised ({s.get('pruning')}, {s.get('quantization')}); "
                         "prune from a directory encoded without pruning and quantisation")
    pruning = Pruning.parse(pruning) if isinstance(pruning, str) else (pruning or Pruning())
    quantization = Quantization.parse(quantization) if isinstance(quantization, str) else quantization
    settings = dict(s, pruning=pruning.to_dict(), quantization=None if quantization is None else quantization.to_dict())
    out = Path(out)
    if out.resolve() == Path(src).resolve():
        raise ValueError(f"{out}: the output must be another directory than the source")
    _check_output(out)
    out.mkdir(parents=True, exist_ok=True)
    kept = _existing_parts(out, settings, overwrite)
    entries = []
    for k, path in enumerate(shards.parts):
        target = out / fmt.part_name(k)
        if k not in kept:
            meta, _ = fmt.part_settings(path)
            ids, m, n_tokens = fmt.read_part(path, shards.vocab_size)
            m = pruning.apply(m)
            if quantization is not None:
                m = quantization.quantize(m)
            fmt.write_part(target, fmt.encode_part(ids, m, n_tokens, part=k, first_row=int(meta["first_row"]),
                                                   settings=settings))
        entries.append(fmt.manifest_entry(target))
    return fmt.write_manifest(out, settings, shards.vocab_size, entries)
