"""The raw journal: providers record what they received, the lake keeps it, re-parse rebuilds."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiolimiter import AsyncLimiter

from flows.journal_export import export_cases
from flows.journal_log import JournalLog, attach, journal_on
from flows.lake_rows import option_chain_table
from flows.reparse import DEFAULT_CHAIN_PARSERS, HttpPayload, _nse_v3, reparse_day
from providers.calendar import IST
from providers.emulators.chains import chain_at, expiries
from providers.emulators.nse import NseEmulator, legacy_payload, nse_date, v3_payload
from providers.emulators.tradingview import TradingViewEmulator
from providers.emulators.trendlyne import TrendlyneEmulator
from providers.journal import JournalEntry, ListSink
from providers.nse import NseOptionsProvider
from providers.nse.parse import parse_chain
from providers.records import OptionChainRow
from providers.registry import ProviderRegistry
from providers.tradingview.historical import TradingViewHistoricalProvider
from providers.trendlyne import TrendlyneOptionsProvider
from storage.compaction import compact
from storage.journal import journal_days, read_journal
from storage.writer import LakeWriter

NOW = datetime(2026, 11, 20, 11, 0, tzinfo=IST).astimezone(UTC)


def today() -> date:
    return datetime.now(UTC).astimezone(IST).date()


async def test_nse_bodies_are_journaled_as_received_without_headers_or_the_page() -> None:
    sink = ListSink()
    with NseEmulator(clock=lambda: NOW) as nse:
        provider = NseOptionsProvider(nse.base_url, limiter=AsyncLimiter(10_000, 1), timeout=2.0)
        provider.set_payload_sink(sink)
        try:
            rows = await provider.get_option_chain("NIFTY")
            cookies = {c.value for c in provider._session.client.cookies.jar}
        finally:
            await provider.aclose()
    operations = [e.operation for e in sink.entries]
    assert operations[0] == "option-chain-contract-info"
    assert operations.count("option-chain-v3") == len({r.expiry for r in rows})
    assert "option-chain" not in operations  # the cookie-priming HTML page is not a payload
    v3 = next(e for e in sink.entries if e.operation == "option-chain-v3")
    assert v3.status == 200 and json.loads(v3.payload)["records"]["data"]
    request = json.loads(v3.request)
    assert set(request) == {"method", "path", "params"}
    assert request["params"]["symbol"] == "NIFTY" and request["params"]["expiry"]
    assert [e.seq for e in sink.entries] == list(range(1, len(sink.entries) + 1))
    assert cookies and not any(c in e.request for c in cookies for e in sink.entries)


async def test_tradingview_history_frames_are_journaled_and_never_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "tvtoken-journal-secret-0123456789"
    monkeypatch.setenv("PROTRADE_TV_AUTH_TOKEN", token)
    sink = ListSink()
    with TradingViewEmulator(clock=lambda: NOW, tick_interval=None) as tv:
        provider = TradingViewHistoricalProvider(url=tv.url, read_timeout=5.0)
        provider.set_payload_sink(sink)
        bars = await provider.get_hist_candles("NSE:NIFTY", "5", 50)
    assert len(bars) == 50 and sink.entries
    assert {e.operation for e in sink.entries} == {"history"}
    assert len({e.connection_id for e in sink.entries}) == 1
    request = json.loads(sink.entries[0].request)
    assert request["symbol"] == "NSE:NIFTY" and request["interval"] == "5"
    assert not any(token in str(e.payload) or token in e.request for e in sink.entries)
    assert any("timescale_update" in str(e.payload) for e in sink.entries)


def test_journal_is_on_by_default_and_zero_days_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROTRADE_JOURNAL_RETENTION_DAYS", raising=False)
    assert journal_on()
    monkeypatch.setenv("PROTRADE_JOURNAL_RETENTION_DAYS", "0")
    assert not journal_on()


async def _snapshot_with_journal(writer: LakeWriter) -> tuple[JournalLog, list[OptionChainRow]]:
    """A NIFTY chain from NSE and one expiry from Trendlyne, written with their journal, as a
    snapshot run writes them."""
    journal = JournalLog(writer, "run-1")
    with NseEmulator(clock=lambda: NOW) as nse, TrendlyneEmulator(clock=lambda: NOW) as tl:
        registry = ProviderRegistry()
        registry.register(
            "nse",
            NseOptionsProvider(nse.base_url, limiter=AsyncLimiter(10_000, 1), timeout=2.0),
            100,
        )
        registry.register(
            "trendlyne",
            TrendlyneOptionsProvider(
                tl.base_url, limiter=AsyncLimiter(10_000, 1), timeout=2.0, clock=lambda: NOW
            ),
            50,
        )
        attach(registry, journal)
        try:
            rows = (await registry.get_option_chain("NIFTY")).value
            trendlyne = registry.providers("options")[1][1]
            expiry = min(r.expiry for r in rows)
            rows += await trendlyne.get_oi_data("NIFTY", expiry, "10:30")
        finally:
            await registry.aclose()
    writer.write("option_chain", option_chain_table(rows))
    journal.flush()
    return journal, rows


async def test_a_snapshot_journal_reparses_to_no_change(data_dir: Path) -> None:
    writer = LakeWriter()
    journal, rows = await _snapshot_with_journal(writer)
    assert journal.written > 0
    stored = read_journal(today())
    assert stored.num_rows == journal.written
    assert set(stored["provider"].to_pylist()) == {"nse", "trendlyne"}
    assert set(stored["flow_run_id"].to_pylist()) == {"run-1"}

    report = reparse_day(today(), writer)

    chain = report.datasets["option_chain"]
    assert report.rejected == {}
    assert chain.rebuilt == len(rows) and chain.unchanged == len(rows)
    assert report.changes == 0 and chain.written == 0


async def test_reparse_with_a_fixed_parser_restores_exactly_the_rows_a_buggy_one_lost(
    data_dir: Path,
) -> None:
    writer = LakeWriter()
    await _snapshot_with_journal(writer)
    # A later answer in a new shape: today's parser refuses it, so its rows never landed.
    v3 = next(
        e
        for e in read_journal(today(), provider="nse").to_pylist()
        if e["operation"] == "option-chain-v3"
    )
    changed = json.loads(v3["payload"])
    changed["records"]["timestamp"] = "20-Nov-2026 11:03:00"
    changed["recordsV4"] = changed.pop("records")  # the format change
    sink = JournalLog(writer, "run-2")
    sink.record(
        JournalEntry(
            int(datetime.now(UTC).timestamp() * 1e6),
            "nse",
            "option-chain-v3",
            v3["request"],
            json.dumps(changed).encode(),
            "injected-session",
            1,
            200,
        )
    )
    sink.flush()
    new_ts = datetime(2026, 11, 20, 11, 3, tzinfo=IST)

    before = reparse_day(today(), writer)
    assert before.rejected == {"nse:option-chain-v3: SchemaChangedError": 1}
    assert before.changes == 0

    def fixed(p: HttpPayload) -> list[OptionChainRow]:
        payload = dict(p.payload)
        if "recordsV4" in payload:
            payload["records"] = payload.pop("recordsV4")
        return _nse_v3(HttpPayload(p.provider, p.operation, p.params, payload, p.received_at, None))

    expected = fixed(
        HttpPayload(
            "nse", "option-chain-v3", json.loads(v3["request"])["params"], changed, NOW, None
        )
    )
    parsers = {**DEFAULT_CHAIN_PARSERS, "nse:option-chain-v3": fixed}
    after = reparse_day(today(), writer, chain_parsers=parsers)

    chain = after.datasets["option_chain"]
    assert after.rejected == {}
    assert chain.added == chain.written == len(expected) > 0
    assert chain.changed == 0
    table = pq.ParquetDataset(data_dir / "lake" / "option_chain").read().to_pylist()
    restored = {(r["strike"], r["option_type"]) for r in table if r["snapshot_ts"] == new_ts}
    assert restored == {(r.strike, r.option_type) for r in expected}
    # Idempotent: the restored rows are now simply there.
    again = reparse_day(today(), writer, chain_parsers=parsers)
    assert again.changes == 0


def _nse_entry(seq: int, operation: str, params: dict[str, str], payload: Any) -> JournalEntry:
    request = {"method": "GET", "path": f"/api/{operation}", "params": params}
    return JournalEntry(
        int(datetime.now(UTC).timestamp() * 1e6) + seq,
        "nse",
        operation,
        json.dumps(request),
        json.dumps(payload).encode(),
        "nse-session",
        seq,
        200,
    )


def _v3_and_legacy() -> tuple[list[date], dict[str, Any], dict[str, Any]]:
    """NIFTY's nearest expiry from v3 at 11:00, and the legacy payload (both expiries) of
    11:01, fetched because v3 failed for the second."""
    e1, e2 = sorted(expiries("NIFTY", NOW.astimezone(IST).date()))[:2]
    later = NOW + timedelta(minutes=1)
    v3 = v3_payload(chain_at("NIFTY", e1, NOW), [e1, e2])
    legacy = legacy_payload([chain_at("NIFTY", e1, later), chain_at("NIFTY", e2, later)])
    return [e1, e2], v3, legacy


def test_a_legacy_fallback_reparses_only_the_expiries_v3_did_not_answer(data_dir: Path) -> None:
    writer = LakeWriter()
    (e1, e2), v3, legacy = _v3_and_legacy()
    # What the flow wrote: E1 from v3, E2 from the legacy payload.
    written = parse_chain(v3, "NIFTY", expiry=e1) + parse_chain(legacy, "NIFTY", expiry=e2)
    writer.write("option_chain", option_chain_table(written))
    journal = JournalLog(writer, "run-1")
    v3_params = {"type": "Indices", "symbol": "NIFTY", "expiry": nse_date(e1)}
    journal.record(_nse_entry(1, "option-chain-v3", v3_params, v3))
    journal.record(_nse_entry(2, "option-chain-indices", {"symbol": "NIFTY"}, legacy))
    journal.flush()

    report = reparse_day(today(), writer)

    chain = report.datasets["option_chain"]
    assert report.rejected == {}
    assert chain.rebuilt == chain.unchanged == len(written)
    assert report.changes == 0 and chain.written == 0


def test_a_legacy_payload_without_v3_answers_reparses_every_expiry(data_dir: Path) -> None:
    writer = LakeWriter()
    (e1, e2), _, legacy = _v3_and_legacy()
    journal = JournalLog(writer, "run-1")  # the expiry listing was gone: legacy for all
    journal.record(_nse_entry(1, "option-chain-indices", {"symbol": "NIFTY"}, legacy))
    journal.flush()

    report = reparse_day(today(), writer)

    expected = parse_chain(legacy, "NIFTY")
    chain = report.datasets["option_chain"]
    assert chain.added == chain.written == len(expected)
    table = pq.ParquetDataset(data_dir / "lake" / "option_chain").read().to_pylist()
    assert {r["expiry"] for r in table} == {e1, e2}


async def test_journal_export_writes_corpus_cases_the_corpus_readers_accept(
    data_dir: Path, tmp_path: Path
) -> None:
    await _snapshot_with_journal(LakeWriter())
    cases = export_cases(today(), tmp_path / "wire")
    kinds = {c.kind for c in cases}
    assert {"nse.chain", "nse.contract_info", "trendlyne.oi"} <= kinds
    readers = _corpus_readers()
    for case in cases:
        spec = json.loads(case.path.read_text(encoding="utf-8"))
        assert spec["note"].startswith(f"exported from the journal of {today()}")
        summary = readers[spec["kind"]](spec["payload"], spec.get("request", {}))
        for key, expected in spec["expect"].items():
            assert summary[key] == expected, (case.path.name, key)
    oi = next(c for c in cases if c.kind == "trendlyne.oi")
    spec = json.loads(oi.path.read_text(encoding="utf-8"))
    assert spec["request"]["underlying"] == "NIFTY" and spec["expect"]["rows"] > 0
    assert len(export_cases(today(), tmp_path / "one", provider="nse", limit=1)) == 1


def _corpus_readers() -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent / "providers"
    readers: dict[str, Any] = {}
    for path in sorted(here.glob("wire_*.py")):
        spec = importlib.util.spec_from_file_location(f"journal_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        readers.update(module.KINDS)
    return readers


def _entries(day: date, conn: str, n: int) -> list[JournalEntry]:
    at = datetime(day.year, day.month, day.day, 10, tzinfo=IST)
    us = int(at.timestamp() * 1e6)
    return [
        JournalEntry(us + i, "nse", "option-chain-v3", "{}", b"{}", conn, i, 200)
        for i in range(1, n + 1)
    ]


def test_compaction_merges_each_closed_journal_day_and_drops_days_past_retention(
    data_dir: Path,
) -> None:
    writer = LakeWriter()
    day = today()
    old, kept = day - timedelta(days=5), day - timedelta(days=1)
    for d in (old, kept, day):
        log = JournalLog(writer)
        for entry in _entries(d, f"c-{d}", 3):
            log.record(entry)
        log.flush()
        log = JournalLog(writer)  # a second file, and a retried flush: the same entries again
        for entry in [*_entries(d, f"c-{d}", 3), *_entries(d, f"d-{d}", 2)]:
            log.record(entry)
        log.flush()
    assert {d.day: d.files for d in journal_days()} == {old: 2, kept: 2, day: 2}

    report = compact("journal", day, journal_retention_days=3)

    assert report.ok and report.expired_days == [old]
    sizes = {d.day: d.files for d in journal_days()}
    assert sizes == {kept: 1, day: 2}  # today stays open
    assert read_journal(kept).num_rows == 5
    assert all(d.bytes > 0 for d in journal_days())


def test_a_future_compaction_cutoff_never_expires_journal_days_within_retention(
    data_dir: Path,
) -> None:
    """`protrade compact --before` accepts any date: retention counts back from today, and
    neither today nor an open day is ever removed, whatever the cutoff."""
    from storage.compaction import expire_journal

    day = today()
    days = [day - timedelta(days=n) for n in (0, 1, 2, 40)]
    writer = LakeWriter()
    for d in days:
        log = JournalLog(writer)
        for entry in _entries(d, f"c-{d}", 1):
            log.record(entry)
        log.flush()

    # The journal switched off (0 days) schedules nothing it kept.
    assert expire_journal(data_dir, day + timedelta(days=60), 0, today=day) == []
    removed = expire_journal(data_dir, day + timedelta(days=60), 30, today=day)

    assert removed == [day - timedelta(days=40)]
    # Scheduled for deletion after the grace: no longer counted as kept.
    assert sorted(d.day for d in journal_days()) == sorted(days[:3])
