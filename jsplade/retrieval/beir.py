"""Reading retrieval data sets in the MTEB/BEIR json-lines layout.

A folder holds ``corpus.jsonl`` (``_id``, optional ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and the relevance judgements, either ``qrels.jsonl`` (``query-id``, ``corpus-id``, ``score``;
MTEB) or ``qrels/<split>.tsv`` (tab-separated ``query-id corpus-id score`` with an optional header line;
BEIR). Any of these files may instead be gzip-compressed with a ``.gz`` suffix.

Every problem is a ``ValueError`` (or ``FileNotFoundError`` for a missing file) whose message starts with
the file and, where it applies, the line number.
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from jsplade.files import atomic_directory

__all__ = ["BeirDataset", "load_beir", "find_data_file", "write_beir"]


@dataclass(frozen=True)
class BeirDataset:
    """A loaded retrieval data set.

    corpus:  document id -> document text (title and text joined, see ``load_beir``)
    queries: query id -> query text, every query of the file (also those without judgements)
    qrels:   query id -> {document id -> graded score} exactly as in the file, scores <= 0 included
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def relevant_docs(self) -> dict[str, set[str]]:
        """query id -> ids of the documents with score > 0; queries with none are left out."""
        out: dict[str, set[str]] = {}
        for qid, judged in self.qrels.items():
            rel = {cid for cid, score in judged.items() if score > 0}
            if rel:
                out[qid] = rel
        return out


def find_data_file(folder: Path, stem: str) -> Path:
    """The path of ``<folder>/<stem>`` or ``<folder>/<stem>.gz``; exactly one of them must exist."""
    plain, packed = folder / stem, folder / f"{stem}.gz"
    if plain.is_file() and packed.is_file():
        raise ValueError(f"{folder}: both {stem} and {stem}.gz exist; keep only one")
    if plain.is_file():
        return plain
    if packed.is_file():
        return packed
    raise FileNotFoundError(f"{folder}: neither {stem} nor {stem}.gz found")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without the newline) of a UTF-8 text file, gzip if it ends in .gz."""
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        with raw, io.TextIOWrapper(raw, encoding="utf-8", newline=None) as text:
            for number, line in enumerate(text, start=1):
                yield number, line.rstrip("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"{path}: file not found") from None
        raise ValueError(f"{path}: cannot be read ({exc})") from None


def _json_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; each line must hold one JSON object."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: malformed JSON line ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}")
        yield number, obj


def id_field(obj: dict, key: str, where: str, what: str = "id") -> str:
    """An id field as a non-empty string (JSON integers are accepted and converted); errors start with
    ``where`` (file and line, or file and row)."""
    if key not in obj:
        raise ValueError(f"{where}: missing '{key}'")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: '{key}' must be a string or an integer, found {type(value).__name__}")
    value = str(value)
    if not value:
        raise ValueError(f"{where}: empty {what} '{key}'")
    return value


def text_field(obj: dict, key: str, where: str, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise ValueError(f"{where}: missing '{key}'")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"{where}: '{key}' must be a string, found {type(value).__name__}")
    return value


def corpus_record(obj: dict, where: str, id_key: str = "_id") -> tuple[str, str]:
    """(id, text) of a corpus record: the title and the text joined by a space (the text alone without a
    title)."""
    cid = id_field(obj, id_key, where, "document id")
    text = text_field(obj, "text", where, required=True)
    title = text_field(obj, "title", where, required=False)
    return cid, f"{title} {text}" if title else text


def _score(value, path: Path, number: int) -> int:
    """A graded relevance score: an integer (an integral float or numeric string is accepted)."""
    if isinstance(value, bool):
        raise ValueError(f"{path}:{number}: score must be an integer, found {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{path}:{number}: score must be an integer, found {value!r}")


def read_corpus_file(path: Path) -> dict[str, str]:
    """id -> text (a title and the text joined by a space) of one corpus.jsonl[.gz] file, in file
    order; a ValueError naming the file and line for a bad record or a repeated id."""
    corpus: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, obj in _json_records(path):
        cid, text = corpus_record(obj, f"{path}:{number}")
        if cid in corpus:
            raise ValueError(f"{path}:{number}: duplicate document id {cid!r} (first on line {first_line[cid]})")
        first_line[cid] = number
        corpus[cid] = text
    return corpus


def _read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, obj in _json_records(path):
        qid = id_field(obj, "_id", f"{path}:{number}", "query id")
        text = text_field(obj, "text", f"{path}:{number}", required=True)
        if qid in queries:
            raise ValueError(f"{path}:{number}: duplicate query id {qid!r} (first on line {first_line[qid]})")
        first_line[qid] = number
        queries[qid] = text
    return queries


def _qrel_rows_jsonl(path: Path) -> Iterator[tuple[int, str, str, int]]:
    for number, obj in _json_records(path):
        qid = id_field(obj, "query-id", f"{path}:{number}", "query id")
        cid = id_field(obj, "corpus-id", f"{path}:{number}", "document id")
        if "score" not in obj:
            raise ValueError(f"{path}:{number}: missing 'score'")
        yield number, qid, cid, _score(obj["score"], path, number)


def _qrel_rows_tsv(path: Path) -> Iterator[tuple[int, str, str, int]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if number == 1 and fields[0].strip() == "query-id":
            continue  # BEIR header line
        if len(fields) != 3:
            raise ValueError(f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                             f"found {len(fields)}")
        qid, cid = fields[0].strip(), fields[1].strip()
        if not qid or not cid:
            raise ValueError(f"{path}:{number}: empty query-id or corpus-id")
        yield number, qid, cid, _score(fields[2], path, number)


def _read_qrels(path: Path, corpus: dict[str, str], queries: dict[str, str],
                on_unknown: str) -> dict[str, dict[str, int]]:
    rows = _qrel_rows_tsv(path) if path.name.removesuffix(".gz").endswith(".tsv") else _qrel_rows_jsonl(path)
    qrels: dict[str, dict[str, int]] = {}
    dropped = 0
    for number, qid, cid, score in rows:
        unknown = [f"query id {qid!r}"] if qid not in queries else []
        if cid not in corpus:
            unknown.append(f"corpus id {cid!r}")
        if unknown:
            if on_unknown == "error":
                raise ValueError(f"{path}:{number}: unknown {' and '.join(unknown)} "
                                 "(pass on_unknown='drop' to skip such judgements)")
            dropped += 1
            continue
        judged = qrels.setdefault(qid, {})
        if cid in judged:
            raise ValueError(f"{path}:{number}: duplicate judgement for query {qid!r} and document {cid!r}")
        judged[cid] = score
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} judgement(s) that refer to unknown query or corpus ids",
                      stacklevel=3)
    return qrels


def _qrels_path(folder: Path, split: str) -> Path:
    candidates = []
    for stem in ("qrels.jsonl", f"qrels/{split}.tsv"):
        for name in (stem, f"{stem}.gz"):
            if (folder / name).is_file():
                candidates.append(folder / name)
    if not candidates:
        raise FileNotFoundError(f"{folder}: no relevance judgements found (qrels.jsonl or qrels/{split}.tsv, "
                                "optionally .gz)")
    if len(candidates) > 1:
        raise ValueError(f"{folder}: several qrels files found ({', '.join(str(c) for c in candidates)}); "
                         "keep only one")
    return candidates[0]


def load_beir(folder: str | Path, split: str = "test",
              on_unknown: Literal["error", "drop"] = "error") -> BeirDataset:
    """Load a data set folder in the MTEB/BEIR json-lines layout.

    * Corpus text: ``title + " " + text`` when the title is a non-empty string, else ``text`` alone
      (a missing or null title counts as empty). ``text`` is required; it may be an empty string.
    * Queries: all of them are kept, including queries with an empty text (they encode to an all-zero
      vector and therefore score 0 against every document) and queries without judgements (the
      evaluator, not the loader, leaves out queries that have no relevant document).
    * Qrels: ``qrels.jsonl`` if present, else ``qrels/<split>.tsv`` (``split`` is only used for the
      tsv form). Scores are kept as in the file; a score <= 0 means "not relevant"
      (see ``BeirDataset.relevant_docs``).
    * Ids are strings (JSON integers are converted). Duplicate document or query ids and duplicate
      (query, document) judgements are errors.
    * ``on_unknown``: what to do with a judgement whose query id or corpus id is not in the loaded
      queries/corpus: ``"error"`` (default) raises ``ValueError``; ``"drop"`` skips it and emits one
      ``UserWarning`` with the count.
    """
    if on_unknown not in ("error", "drop"):
        raise ValueError(f"on_unknown must be 'error' or 'drop', got {on_unknown!r}")
    if not isinstance(split, str) or not split or "/" in split:
        raise ValueError(f"split must be a plain non-empty name such as 'test', got {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: data set folder not found")
    corpus = read_corpus_file(find_data_file(folder, "corpus.jsonl"))
    queries = _read_queries(find_data_file(folder, "queries.jsonl"))
    qrels = _read_qrels(_qrels_path(folder, split), corpus, queries, on_unknown)
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def write_beir(folder: str | Path, dataset: BeirDataset, overwrite: bool = False) -> Path:
    """Write ``dataset`` as a folder ``load_beir`` reads: ``corpus.jsonl`` (``_id``, ``title`` "", ``text``),
    ``queries.jsonl`` and ``qrels.jsonl`` (MTEB layout, every judgement with its score), in the dataset's
    order. The folder appears complete or not at all (``jsplade.files.atomic_directory``); an existing one is
    refused unless ``overwrite``."""
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for cid, text in dataset.corpus.items():
                f.write(json.dumps({"_id": cid, "title": "", "text": text}, ensure_ascii=False) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for qid, text in dataset.queries.items():
                f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
        with open(tmp / "qrels.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for qid, judged in dataset.qrels.items():
                for cid, score in judged.items():
                    f.write(json.dumps({"query-id": qid, "corpus-id": cid, "score": score}, ensure_ascii=False)
                            + "\n")
    return Path(folder)
