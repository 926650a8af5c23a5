"""The bundled LIMIT data and a generator of LIMIT-style training pairs.

LIMIT documents read ``"<First Last> likes A, B, ... and Z."`` and its queries ``"Who likes X?"``.
``generate_limit_pairs`` writes pairs of that shape using ONLY items that no LIMIT query asks for
(the non-query pool: the strings of ``items.json`` that are not a query item), so that training on them
never shows the model an evaluation query item; ``generate_limit_corpus`` builds a whole retrieval data set
(corpus, queries, complete judgements) from the same pool, for mining training rows
(``jsplade.retrieval.mining``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from jsplade.files import atomic_write_text, read_json
from jsplade.retrieval.beir import BeirDataset

__all__ = ["LimitPaths", "limit_paths", "load_items", "query_items", "non_query_pool", "generate_limit_pairs",
           "generate_limit_corpus", "format_document", "write_pairs_jsonl", "FIRST_NAMES", "LAST_NAMES"]

_QUERY_RE = re.compile(r"Who likes (.+)\?")

# Plain, common given names and surnames (made-up combinations; 100 x 100 distinct people).
FIRST_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
    "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Margaret", "Donald", "Sandra",
    "Steven", "Ashley", "Paul", "Kimberly", "Andrew", "Emily", "Joshua", "Donna", "Kenneth", "Michelle",
    "Kevin", "Dorothy", "Brian", "Carol", "George", "Amanda", "Edward", "Melissa", "Ronald", "Deborah",
    "Timothy", "Stephanie", "Jason", "Rebecca", "Jeffrey", "Laura", "Ryan", "Sharon", "Jacob", "Cynthia",
    "Gary", "Kathleen", "Nicholas", "Amy", "Eric", "Shirley", "Jonathan", "Angela", "Stephen", "Helen",
    "Larry", "Anna", "Justin", "Brenda", "Scott", "Pamela", "Brandon", "Nicole", "Benjamin", "Samantha",
    "Samuel", "Katherine", "Gregory", "Christine", "Frank", "Debra", "Alexander", "Rachel", "Raymond", "Catherine",
    "Patrick", "Carolyn", "Jack", "Janet", "Dennis", "Ruth", "Jerry", "Maria", "Tyler", "Heather",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
    "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper",
    "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson",
    "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez",
)


@dataclass(frozen=True)
class LimitPaths:
    """Folders and files of the LIMIT data shipped in the repository's ``data/`` folder."""

    root: Path
    limit: Path        # queries.jsonl, qrels.jsonl, corpus.jsonl.gz (rebuilt corpus), items.json
    limit_small: Path  # corpus.jsonl, queries.jsonl, qrels.jsonl (unchanged LIMIT-small)
    items: Path        # limit/items.json


def limit_paths() -> LimitPaths:
    """The shipped data folders, resolved relative to the repository (``<repo>/data``).

    Raises ``FileNotFoundError`` naming what is missing (e.g. when jsplade is installed without the
    repository checkout).
    """
    root = Path(__file__).resolve().parents[2] / "data"
    paths = LimitPaths(root=root, limit=root / "limit", limit_small=root / "limit-small",
                       items=root / "limit" / "items.json")
    required = [paths.items, paths.limit / "queries.jsonl", paths.limit / "qrels.jsonl",
                paths.limit / "corpus.jsonl.gz", paths.limit_small / "corpus.jsonl",
                paths.limit_small / "queries.jsonl", paths.limit_small / "qrels.jsonl"]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"LIMIT data not found (jsplade expects the repository's data/ folder): "
                                f"missing {', '.join(missing)}")
    return paths


def load_items(items: str | Path | Sequence[str]) -> list[str]:
    """The attribute strings: a path to a JSON list (``items.json``) or the list itself.

    Each item must be a non-empty string without surrounding spaces and without ``", "`` (the list
    separator of a document); duplicates are an error (``ValueError`` naming the file or "items").
    """
    where = "items"
    if isinstance(items, (str, Path)):
        where = str(items)
        items = read_json(items, "items file")
        if not isinstance(items, list):
            raise ValueError(f"{where}: items file must hold a JSON list of strings")
    out = list(items)
    seen: set[str] = set()
    for i, item in enumerate(out):
        if not isinstance(item, str) or not item.strip() or item != item.strip():
            raise ValueError(f"{where}: item {i} must be a non-empty string without surrounding spaces, got {item!r}")
        if ", " in item:
            raise ValueError(f"{where}: item {i} ({item!r}) contains ', ' and cannot appear in a list sentence")
        if item in seen:
            raise ValueError(f"{where}: duplicate item {item!r}")
        seen.add(item)
    return out


def query_items(queries_path: str | Path) -> list[str]:
    """The X of every ``"Who likes X?"`` query of a queries.jsonl file, in file order, without repeats.

    Any line that is not such a query raises ``ValueError`` naming the file and line.
    """
    path = Path(queries_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: queries file not found")
    out: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{number}: expected a JSON object with a 'text' field") from None
            match = _QUERY_RE.fullmatch(text) if isinstance(text, str) else None
            if match is None:
                raise ValueError(f"{path}:{number}: query {text!r} is not of the form 'Who likes X?'")
            out[match.group(1)] = None
    return list(out)


def _as_paths(limit_queries: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(limit_queries, (str, Path)):
        return [Path(limit_queries)]
    paths = [Path(p) for p in limit_queries]
    if not paths:
        raise ValueError("limit_queries must name at least one queries.jsonl file")
    return paths


def non_query_pool(items: str | Path | Sequence[str], limit_queries: str | Path | Sequence[str | Path],
                   exclude_items: Iterable[str] = ()) -> list[str]:
    """Items (in ``items`` order) that no query of the ``limit_queries`` file(s) asks for and that are not
    in ``exclude_items``. With LIMIT's items.json and queries.jsonl this is the 850-item pool."""
    all_items = load_items(items)
    banned = set(exclude_items)
    for path in _as_paths(limit_queries):
        banned.update(query_items(path))
    return [x for x in all_items if x not in banned]


def format_document(name: str, liked: Sequence[str], serial_comma: bool = False) -> str:
    """``"<name> likes A, B and C."`` (LIMIT's style); ``serial_comma`` gives ``"A, B, and C."``."""
    liked = list(liked)
    if not liked:
        raise ValueError("liked must hold at least one item")
    if len(liked) == 1:
        body = liked[0]
    elif len(liked) == 2:
        body = f"{liked[0]} and {liked[1]}"
    else:
        body = ", ".join(liked[:-1]) + ("," if serial_comma else "") + f" and {liked[-1]}"
    return f"{name} likes {body}."


def _check_count(value, arg: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate_limit_pairs(items: str | Path | Sequence[str], limit_queries: str | Path | Sequence[str | Path],
                         n_pairs: int, items_per_doc: tuple[int, int] = (10, 20), seed: int = 0,
                         hard_negatives: int = 0, negative_overlap: float = 0.5,
                         exclude_items: Iterable[str] = (), serial_comma: bool = False,
                         negative_word_overlap: bool = False) -> list[dict[str, str]]:
    """LIMIT-style training rows built only from non-query items.

    * ``items``: items.json path or list; ``limit_queries``: one or more queries.jsonl files whose
      ``Who likes X?`` items are excluded (pass LIMIT-small's file too when evaluating on it), plus any
      ``exclude_items``.
    * Row i: ``{"query": "Who likes X?", "document": "<First Last> likes ..."}``; the document lists X and
      ``n - 1`` other pool items in random order, n drawn uniformly from ``items_per_doc`` (inclusive).
      The X's walk through reshuffled passes over the pool, so items are used as evenly as possible.
    * ``hard_negatives`` > 0 adds ``"negative_1"``, ... : documents of other people that do not contain X;
      each shares ``round(negative_overlap * (n - 1))`` (capped by its own length) of the positive's other
      items and is topped up with random pool items.
    * ``negative_word_overlap``: in every negative, one item is replaced by a pool item that shares a word
      with X (e.g. "Oak Trees" for "Birch Trees"), when the pool has one: the query's words are then
      present without X itself — LIMIT's hard case for bag-of-words scoring.
    * Every person (first/last name pair from ``FIRST_NAMES`` x ``LAST_NAMES``) occurs once in the output
      while there are enough names (10,000); beyond that, names are drawn with replacement.
    * Deterministic for a given ``seed`` (numpy PCG64).
    """
    n_pairs = _check_count(n_pairs, "n_pairs", 1)
    hard_negatives = _check_count(hard_negatives, "hard_negatives", 0)
    seed = _check_count(seed, "seed", 0)
    if (not isinstance(items_per_doc, (tuple, list)) or len(items_per_doc) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in items_per_doc)):
        raise ValueError(f"items_per_doc must be a pair of integers (lo, hi), got {items_per_doc!r}")
    lo, hi = int(items_per_doc[0]), int(items_per_doc[1])
    if isinstance(negative_overlap, bool) or not isinstance(negative_overlap, (int, float)) \
            or not 0.0 <= negative_overlap <= 1.0:
        raise ValueError(f"negative_overlap must be a number in [0, 1], got {negative_overlap!r}")
    pool = non_query_pool(items, limit_queries, exclude_items)
    limit = len(pool) - (1 if hard_negatives else 0)
    if not 1 <= lo <= hi <= limit:
        why = "the non-query pool size" + (" minus 1 (negatives exclude the query item)" if hard_negatives else "")
        raise ValueError(f"items_per_doc {items_per_doc!r} must satisfy 1 <= lo <= hi <= {limit} ({why})")
    n_people = n_pairs * (1 + hard_negatives)
    grid = len(FIRST_NAMES) * len(LAST_NAMES)

    rng = np.random.default_rng(seed)
    pool_arr = np.asarray(pool, dtype=object)
    n_pool = len(pool)
    people = rng.choice(grid, size=n_people, replace=n_people > grid)
    words = [set(str(it).lower().split()) for it in pool]
    by_word: dict[str, list[int]] = {}
    for i, ws in enumerate(words):
        for w in ws:
            by_word.setdefault(w, []).append(i)
    names = [f"{FIRST_NAMES[p // len(LAST_NAMES)]} {LAST_NAMES[p % len(LAST_NAMES)]}" for p in people]
    passes = -(-n_pairs // n_pool)
    targets = np.concatenate([rng.permutation(n_pool) for _ in range(passes)])[:n_pairs]

    rows: list[dict[str, str]] = []
    person = iter(names)
    for x in targets:
        n = int(rng.integers(lo, hi + 1))
        others = rng.choice(n_pool - 1, size=n - 1, replace=False)
        others = others + (others >= x)          # indices of the pool without x
        liked = rng.permutation(np.concatenate([[x], others]))
        row = {"query": f"Who likes {pool[x]}?",
               "document": format_document(next(person), pool_arr[liked], serial_comma)}
        for j in range(hard_negatives):
            m = int(rng.integers(lo, hi + 1))
            n_shared = min(int(round(negative_overlap * len(others))), m)
            shared = rng.choice(others, size=n_shared, replace=False) if n_shared else np.zeros(0, np.int64)
            allowed = np.ones(n_pool, dtype=bool)
            allowed[x] = False
            allowed[shared] = False
            fill = rng.choice(np.flatnonzero(allowed), size=m - n_shared, replace=False)
            neg = rng.permutation(np.concatenate([shared, fill]).astype(np.int64))
            if negative_word_overlap:
                sharing = sorted({i for w in words[x] for i in by_word[w]} - {int(x)} - set(neg.tolist()))
                if sharing:
                    neg[int(rng.integers(len(neg)))] = sharing[int(rng.integers(len(sharing)))]
            row[f"negative_{j + 1}"] = format_document(next(person), pool_arr[neg], serial_comma)
        rows.append(row)
    return rows


def generate_limit_corpus(items: str | Path | Sequence[str], limit_queries: str | Path | Sequence[str | Path],
                          n_documents: int, items_per_doc: tuple[int, int] = (12, 18), seed: int = 0,
                          exclude_items: Iterable[str] = (), serial_comma: bool = False) -> BeirDataset:
    """A LIMIT-style retrieval data set built only from non-query items (see ``generate_limit_pairs``).

    * Corpus: ``n_documents`` documents ``"<First Last> likes A, B and C."`` with ids ``doc00000``, ... (zero
      padded: string order = number order); each lists n distinct pool items in random order, n drawn uniformly
      from ``items_per_doc`` (inclusive). People are distinct while there are enough names (10,000).
    * Queries: ``"Who likes X?"`` for every pool item X that some document lists, ids ``q0000``, ... in pool
      order.
    * Judgements: complete by construction: query X has score 1 for exactly the documents that list X.
    * Deterministic for a given ``seed`` (numpy PCG64).
    """
    n_documents = _check_count(n_documents, "n_documents", 1)
    seed = _check_count(seed, "seed", 0)
    if (not isinstance(items_per_doc, (tuple, list)) or len(items_per_doc) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in items_per_doc)):
        raise ValueError(f"items_per_doc must be a pair of integers (lo, hi), got {items_per_doc!r}")
    lo, hi = int(items_per_doc[0]), int(items_per_doc[1])
    pool = non_query_pool(items, limit_queries, exclude_items)
    if not 1 <= lo <= hi <= len(pool):
        raise ValueError(f"items_per_doc {items_per_doc!r} must satisfy 1 <= lo <= hi <= {len(pool)} "
                         "(the non-query pool size)")
    rng = np.random.default_rng(seed)
    grid = len(FIRST_NAMES) * len(LAST_NAMES)
    people = rng.choice(grid, size=n_documents, replace=n_documents > grid)
    width = len(str(n_documents - 1))
    corpus: dict[str, str] = {}
    listed_by: dict[int, list[str]] = {}
    for i, p in enumerate(people):
        doc_id = f"doc{i:0{width}d}"
        liked = rng.choice(len(pool), size=int(rng.integers(lo, hi + 1)), replace=False)
        name = f"{FIRST_NAMES[p // len(LAST_NAMES)]} {LAST_NAMES[p % len(LAST_NAMES)]}"
        corpus[doc_id] = format_document(name, [pool[j] for j in liked], serial_comma)
        for j in liked:
            listed_by.setdefault(int(j), []).append(doc_id)
    asked = sorted(listed_by)
    qwidth = len(str(max(len(asked) - 1, 0)))
    queries = {f"q{n:0{qwidth}d}": f"Who likes {pool[j]}?" for n, j in enumerate(asked)}
    qrels = {qid: {doc_id: 1 for doc_id in listed_by[j]} for qid, j in zip(queries, asked)}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def write_pairs_jsonl(path: str | Path, rows: Sequence[dict[str, str]]) -> None:
    """Write rows as JSON lines (UTF-8, non-ASCII kept), atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
