"""Reference documents per trading day in the data dir (local folder; S3 goes through the same
store seam, tested with the flows on S3)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from storage.lakestore import LocalStore
from storage.reference import ReferenceError, latest_before, read_day, write_day


def test_a_day_document_round_trips_and_a_missing_day_is_none(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert read_day(store, "expiries", date(2026, 12, 3)) is None
    write_day(store, "expiries", date(2026, 12, 3), {"NIFTY": ["2026-12-08"]})
    assert read_day(store, "expiries", date(2026, 12, 3)) == {"NIFTY": ["2026-12-08"]}
    assert (tmp_path / "reference" / "expiries" / "2026-12-03.json").is_file()


def test_latest_before_is_the_newest_earlier_day_never_the_day_itself(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert latest_before(store, "underlyings", date(2026, 12, 3)) is None
    for day, doc in ((date(2026, 11, 30), ["A"]), (date(2026, 12, 1), ["B"])):
        write_day(store, "underlyings", day, doc)
    write_day(store, "underlyings", date(2026, 12, 3), ["TODAY"])
    assert latest_before(store, "underlyings", date(2026, 12, 3)) == (date(2026, 12, 1), ["B"])
    assert latest_before(store, "underlyings", date(2026, 12, 1)) == (date(2026, 11, 30), ["A"])


def test_a_corrupt_document_is_a_clear_error_and_a_bad_kind_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("reference/expiries/2026-12-03.json", b"{not json")
    with pytest.raises(ReferenceError, match="not JSON"):
        read_day(store, "expiries", date(2026, 12, 3))
    with pytest.raises(ValueError, match="bad reference kind"):
        write_day(store, "../lake", date(2026, 12, 3), {})
