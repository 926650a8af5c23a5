"""LIMIT data location and the LIMIT-style pair generator (never uses a LIMIT query item)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jsplade.limit.data import (FIRST_NAMES, LAST_NAMES, format_document, generate_limit_corpus, generate_limit_pairs,
                                limit_paths, load_items, non_query_pool, query_items, write_pairs_jsonl)

PATHS = limit_paths()
LIMIT_QUERIES = PATHS.limit / "queries.jsonl"
ALL_ITEMS = json.loads(PATHS.items.read_text())
QUERY_ITEMS = {re.fullmatch(r"Who likes (.+)\?", json.loads(line)["text"]).group(1)
               for line in LIMIT_QUERIES.read_text().splitlines()}
NAMES = {f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES}


def parse_document(doc: str) -> tuple[str, list[str]]:
    """Name and liked items of "<First Last> likes A, B and C." (pool items contain no ', ' or ' and ')."""
    m = re.fullmatch(r"(\S+ \S+) likes (.+)\.", doc)
    assert m, doc
    *head, last = m.group(2).split(", ")
    if len(head) == 0:
        parts = last.split(" and ")
        assert len(parts) in (1, 2), doc
        return m.group(1), parts
    a, b = last.split(" and ")
    return m.group(1), head + [a, b]


def test_limit_paths_and_pool_sizes():
    assert PATHS.root == Path(__file__).resolve().parents[2] / "data"
    assert (PATHS.limit / "corpus.jsonl.gz").is_file() and (PATHS.limit_small / "corpus.jsonl").is_file()
    assert len(ALL_ITEMS) == 1848 and len(QUERY_ITEMS) == 1000
    assert query_items(LIMIT_QUERIES)[:2] == ["Birch Trees", "Levels"]
    pool = non_query_pool(PATHS.items, LIMIT_QUERIES)
    assert len(pool) == 850 and not set(pool) & QUERY_ITEMS and set(pool) <= set(ALL_ITEMS)
    both = non_query_pool(PATHS.items, [LIMIT_QUERIES, PATHS.limit_small / "queries.jsonl"])
    assert len(both) == 402 and set(both) < set(pool)


@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_generator_never_emits_a_query_item(hard_negatives):
    rows = generate_limit_pairs(PATHS.items, LIMIT_QUERIES, n_pairs=900, items_per_doc=(1, 25), seed=3,
                                hard_negatives=hard_negatives)
    assert len(rows) == 900
    pool = set(non_query_pool(PATHS.items, LIMIT_QUERIES))
    people = []
    for row in rows:
        assert list(row) == ["query", "document"] + [f"negative_{j + 1}" for j in range(hard_negatives)]
        x = re.fullmatch(r"Who likes (.+)\?", row["query"]).group(1)
        assert x in pool and x not in QUERY_ITEMS
        name, liked = parse_document(row["document"])
        people.append(name)
        assert name in NAMES and x in liked and 1 <= len(liked) <= 25 and len(set(liked)) == len(liked)
        assert set(liked) <= pool and not set(liked) & QUERY_ITEMS
        for j in range(hard_negatives):
            neg_name, neg = parse_document(row[f"negative_{j + 1}"])
            people.append(neg_name)
            assert x not in neg and set(neg) <= pool and 1 <= len(neg) <= 25
    assert len(set(people)) == len(people)                       # every person once
    # 900 > 850: the query items cover the whole pool before any repeats
    xs = [re.fullmatch(r"Who likes (.+)\?", r["query"]).group(1) for r in rows]
    assert set(xs[:850]) == pool and len(set(xs)) == 850


def test_deterministic_counts_and_overlap():
    a = generate_limit_pairs(ALL_ITEMS, LIMIT_QUERIES, 20, (10, 12), seed=7, hard_negatives=1, negative_overlap=1.0)
    b = generate_limit_pairs(PATHS.items, [LIMIT_QUERIES], 20, (10, 12), seed=7, hard_negatives=1,
                             negative_overlap=1.0)
    c = generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 20, (10, 12), seed=8, hard_negatives=1, negative_overlap=1.0)
    assert a == b and a != c
    for row in a:
        _, pos = parse_document(row["document"])
        _, neg = parse_document(row["negative_1"])
        assert 10 <= len(pos) <= 12 and 10 <= len(neg) <= 12
        x = row["query"][len("Who likes "):-1]
        # overlap 1.0: the negative takes as many of the positive's other items as it can hold
        others = set(pos) - {x}
        if len(neg) <= len(others):
            assert set(neg) <= others
        else:
            assert others < set(neg)


def test_exclusions_and_format():
    excluded = non_query_pool(PATHS.items, LIMIT_QUERIES)[:800]
    rows = generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 60, (3, 5), seed=0, exclude_items=excluded)
    allowed = set(non_query_pool(PATHS.items, LIMIT_QUERIES)) - set(excluded)
    assert len(allowed) == 50
    for row in rows:
        assert set(parse_document(row["document"])[1]) <= allowed
    assert format_document("Ann Lee", ["A"]) == "Ann Lee likes A."
    assert format_document("Ann Lee", ["A", "B"]) == "Ann Lee likes A and B."
    assert format_document("Ann Lee", ["A", "B", "C"]) == "Ann Lee likes A, B and C."
    assert format_document("Ann Lee", ["A", "B", "C"], serial_comma=True) == "Ann Lee likes A, B, and C."
    row = generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 1, (4, 4), seed=1, serial_comma=True)[0]
    assert re.fullmatch(r"\S+ \S+ likes [^,]+, [^,]+, [^,]+, and [^,]+\.", row["document"])


def test_write_pairs_jsonl(tmp_path):
    rows = generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 5, seed=2)
    out = tmp_path / "pairs.jsonl"
    write_pairs_jsonl(out, rows)
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="n_pairs must be an integer >= 1"):
        generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 0)
    with pytest.raises(ValueError, match="items_per_doc"):
        generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 1, items_per_doc=(5, 2))
    with pytest.raises(ValueError, match="items_per_doc"):
        generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 1, items_per_doc=(1, 851))
    with pytest.raises(ValueError, match="negative_overlap"):
        generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 1, negative_overlap=1.5)
    bad = tmp_path / "queries.jsonl"
    bad.write_text('{"_id": "q", "text": "Who likes Cats?"}\n{"_id": "r", "text": "What is love?"}\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:2: query 'What is love\?' is not of the form"):
        query_items(bad)
    with pytest.raises(ValueError, match="duplicate item 'A'"):
        load_items(["A", "B", "A"])
    with pytest.raises(ValueError, match="contains ', '"):
        load_items(["A, B"])
    items = tmp_path / "items.json"
    items.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="items.json: items file must hold a JSON list"):
        load_items(items)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        query_items(tmp_path / "nope.jsonl")


def test_many_pairs_and_word_overlap_negatives():
    """Beyond 10,000 people names repeat; word-overlap negatives hold a pool item sharing a word with X."""
    rows = generate_limit_pairs(PATHS.items, LIMIT_QUERIES, 6000, items_per_doc=(5, 8), hard_negatives=1,
                                negative_word_overlap=True, seed=3)
    assert len(rows) == 6000
    shared = 0
    for row in rows:
        x = row["query"][len("Who likes "):-1]
        _, neg_items = parse_document(row["negative_1"])
        assert x not in neg_items and not (set(neg_items) | {x}) & QUERY_ITEMS
        x_words = set(x.lower().split())
        shared += any(x_words & set(it.lower().split()) for it in neg_items)
    assert shared / len(rows) > 0.3  # the pool has a word-sharing item for many (not all) X


def test_limit_corpus_has_complete_judgements_and_no_query_item():
    both = [LIMIT_QUERIES, PATHS.limit_small / "queries.jsonl"]
    data = generate_limit_corpus(PATHS.items, both, n_documents=120, items_per_doc=(3, 9), seed=5)
    pool = set(non_query_pool(PATHS.items, both))
    assert list(data.corpus) == [f"doc{i:03d}" for i in range(120)]
    liked = {}
    for doc_id, text in data.corpus.items():
        name, items = parse_document(text)
        assert name in NAMES and 3 <= len(items) <= 9 and len(set(items)) == len(items) and set(items) <= pool
        liked[doc_id] = set(items)
    asked = [re.fullmatch(r"Who likes (.+)\?", q).group(1) for q in data.queries.values()]
    assert set(asked) == set().union(*liked.values()) and len(set(asked)) == len(asked)
    for qid, x in zip(data.queries, asked):   # every document that lists X, and only those, is relevant
        assert data.qrels[qid] == {d: 1 for d in data.corpus if x in liked[d]}
    assert generate_limit_corpus(PATHS.items, both, 120, (3, 9), seed=5) == data
    assert generate_limit_corpus(PATHS.items, both, 120, (3, 9), seed=6) != data
    with pytest.raises(ValueError, match="items_per_doc"):
        generate_limit_corpus(PATHS.items, both, 10, (5, 500))
    with pytest.raises(ValueError, match="n_documents"):
        generate_limit_corpus(PATHS.items, both, 0)
