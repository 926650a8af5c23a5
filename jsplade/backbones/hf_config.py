"""What every backbone config dataclass shares around its own fields and checks.

A backbone config (``BertConfig``, ``GteConfig``) is a frozen dataclass that defines ``validate()``,
``from_hf_dict(raw, source)`` and ``to_hf_dict(naming)``; ``HfConfigMethods`` adds, from those:

* validation on construction and on ``replace(**changes)``;
* ``from_json_file(path)`` (errors name the file) and ``to_json_string(naming)``;
* ``canonical_hash``, the hash of the canonical config.json object. A config with dict-valued fields is
  not hashable field by field, yet configs are static arguments under ``jit``; the dataclass must name it
  in its own body (``__hash__ = HfConfigMethods.canonical_hash``), since ``dataclass(frozen=True)`` would
  otherwise write a field-wise ``__hash__`` over the inherited one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jsplade.files import read_json_object


class HfConfigMethods:
    def __post_init__(self) -> None:
        self.validate()

    def canonical_hash(self) -> int:
        return hash(json.dumps(self.to_hf_dict(), sort_keys=True, default=str))

    @classmethod
    def from_json_file(cls, path: str | Path):
        path = Path(path)
        raw = read_json_object(path, what="HF model config")
        return cls.from_hf_dict(raw, source=str(path))

    def to_json_string(self, naming: str | None = None) -> str:
        return json.dumps(self.to_hf_dict(naming), indent=2, sort_keys=False) + "\n"

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied, validated like a new config."""
        return dataclasses.replace(self, **changes)
