"""Every file under tests/fixtures/wire/ runs through the product's real parsers.

A case is one JSON file, `tests/fixtures/wire/<provider>/<case>.json`:

    {
      "note": "one line: the real server behaviour this payload stands for",
      "kind": "<a reader name, e.g. nse.chain_v3>",
      "request": {...},      # optional: what was asked (underlying, expiry, interval, ...)
      "payload": ...,        # the body as the server sends it (JSON value, or text frames)
      "expect": {...}        # facts the reader must report; each key is compared exactly
    }

A reader (`KINDS` in a `tests/providers/wire_<provider>.py` module) feeds the payload to the real
parser and returns a summary dict of what came out (row counts, error class names, chosen
fields). A format change seen in production is then one new file here, nothing else.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "wire"
Reader = Callable[[Any, dict[str, Any]], dict[str, Any]]


def _readers() -> dict[str, Reader]:
    kinds: dict[str, Reader] = {}
    for module_path in sorted(Path(__file__).parent.glob("wire_*.py")):
        spec = importlib.util.spec_from_file_location(f"wire_{module_path.stem}", module_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, reader in module.KINDS.items():
            assert name not in kinds, f"wire reader {name!r} is defined twice"
            kinds[name] = reader
    return kinds


READERS = _readers()
CASES = sorted(CORPUS.glob("*/*.json"))


def test_the_corpus_covers_every_provider() -> None:
    providers = {case.parent.name for case in CASES}
    assert {"nse", "trendlyne", "tradingview"} <= providers


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_wire_case(case: Path) -> None:
    spec = json.loads(case.read_text(encoding="utf-8"))
    assert isinstance(spec.get("note"), str) and spec["note"].strip(), "every case says why"
    assert "\n" not in spec["note"], "the note is one line"
    assert spec["kind"] in READERS, f"no reader for kind {spec['kind']!r}"
    assert spec.get("expect"), "a case must expect something"
    summary = READERS[spec["kind"]](spec["payload"], spec.get("request", {}))
    for key, expected in spec["expect"].items():
        assert key in summary, f"reader {spec['kind']!r} reports no {key!r}"
        assert summary[key] == expected, f"{key}: got {summary[key]!r}, expected {expected!r}"
