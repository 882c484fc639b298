"""The harness's arithmetic, and a tiny run of each benchmark so the code cannot rot.

No timing assertions: only that figures come out, well-formed, with the right verdict logic.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_backfill, bench_chain, bench_live, bench_queries, datagen
from benchmarks.__main__ import main
from benchmarks.harness import (
    Target,
    alternate,
    figure,
    format_table,
    not_available,
    percentile,
    ratio_of,
    verdict_of,
    write_json,
)
from providers.records import Bar, BarBatch
from storage.writer import LakeWriter


def test_speedup_ratio_is_baseline_over_ours_and_relative_is_ours_over_baseline():
    assert ratio_of(0.5, 2.0, "speedup") == 4.0
    assert ratio_of(3.0, 1.5, "relative") == 2.0
    assert ratio_of(None, 1.0, "speedup") is None
    assert ratio_of(1.0, 0.0, "relative") is None
    assert ratio_of(1.0, 2.0, "none") is None


def test_verdict_passes_at_the_bound_and_fails_beyond_it():
    at_least = Target(">=", 3.0)
    assert verdict_of(at_least, 1.0, 3.0) == "pass"
    assert verdict_of(at_least, 1.0, 2.99) == "FAIL"
    at_most_ours = Target("<=", 0.1, on="ours")
    assert verdict_of(at_most_ours, 0.1, None) == "pass"
    assert verdict_of(at_most_ours, 0.2, 50.0) == "FAIL"
    assert verdict_of(at_least, 1.0, None) == "n/a"
    assert verdict_of(None, 1.0, 1.0) == "n/a"


def test_alternate_interleaves_and_flips_the_order_every_round():
    calls: list[str] = []
    samples = alternate(
        [("a", lambda: calls.append("a") or 1.0), ("b", lambda: calls.append("b") or 2.0)], 3
    )
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert samples == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    with pytest.raises(ValueError):
        alternate([("a", lambda: 1.0)], 0)


def test_percentile_uses_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_table_and_json_carry_every_figure_and_the_not_available_reason(tmp_path):
    figs = [
        figure("x", "speed", "s", 0.01, 0.05, kind="speedup", target=Target(">=", 3.0)),
        not_available("y", "latency", "no live client", None),
    ]
    assert figs[0].ratio == pytest.approx(5.0) and figs[0].verdict == "pass"
    text = format_table(figs)
    assert "5.00x" in text and "10.0 ms" in text and "not available: no live client" in text
    out = tmp_path / "r.json"
    write_json(figs, out, {"quick": True})
    data = json.loads(out.read_text())
    assert [f["figure"] for f in data["figures"]] == ["speed", "latency"]
    assert {"figure", "ours", "baseline", "ratio", "target", "verdict"} <= set(data["figures"][0])


def test_generated_data_is_seeded_and_has_the_promised_sizes():
    payloads = datagen.nifty_payload_set()
    assert datagen.count_legs(payloads) >= 4_000
    a, b = datagen.candles_table(1_000), datagen.candles_table(1_000)
    assert a.num_rows == 1_000 and a.equals(b)
    snaps = list(datagen.month_snapshots(datagen.TINY_MONTH))
    assert len(snaps) == datagen.TINY_MONTH.snapshots
    assert sum(s.table.num_rows for s in snaps) == datagen.TINY_MONTH.rows


def test_chain_benchmark_runs_tiny():
    fig, content_named, durability = bench_chain.run(quick=True, repeats=1)
    assert fig.ours and fig.baseline and fig.ratio and fig.verdict in ("pass", "FAIL")
    assert content_named.ours and content_named.baseline == fig.baseline
    assert content_named.verdict == "n/a"
    assert durability.ours and durability.baseline and durability.verdict == "n/a"


def test_the_chain_benchmark_writes_as_a_scheduled_slot_does_and_content_named(tmp_path):
    from flows.snapshot import idempotency_key
    from storage.writer import KEYED_PREFIX, keyed_file_name

    payloads = bench_chain.restamped(datagen.nifty_payload_set(), 7)
    slot = bench_chain.parse_timestamp(payloads[0]["records"]["timestamp"])
    key = bench_chain.slot_key(payloads)
    assert key == idempotency_key(slot, "NIFTY")
    bench_chain.write_once(lambda: payloads, tmp_path)()
    bench_chain.write_once(lambda: payloads, tmp_path, keyed=False)()
    names = sorted(p.name for p in (tmp_path / "lake" / "option_chain").rglob("[!_]*.parquet"))
    assert len(names) == 2 and names[1].startswith(KEYED_PREFIX)
    assert not names[0].startswith(KEYED_PREFIX)  # `<min-ts>_<max-ts>_<digest>.parquet`
    folder = next((tmp_path / "lake" / "option_chain").rglob(names[1])).parent
    partition = folder.relative_to(tmp_path / "lake" / "option_chain").as_posix()
    assert names[1] == keyed_file_name(key, "option_chain", partition)


def test_fsync_lifted_skips_fsync_only_inside_and_restores_it(tmp_path):
    import os

    from benchmarks.harness import fsync_lifted

    real = os.fsync
    calls = []
    with fsync_lifted():
        with open(tmp_path / "f", "wb") as out:
            os.fsync(out.fileno())  # a no-op here
        calls.append(os.fsync is real)
    assert calls == [False] and os.fsync is real


def test_every_chain_run_is_a_new_snapshot_so_it_writes_a_file(tmp_path):
    payloads = datagen.nifty_payload_set()
    later = bench_chain.restamped(payloads, 5)
    first = payloads[0]["records"]["timestamp"]
    assert first.endswith("11:00:00")
    assert {p["records"]["timestamp"] for p in later} == {first.replace("11:00:00", "11:00:05")}
    assert [p["records"]["data"] for p in later] == [p["records"]["data"] for p in payloads]
    # The same snapshot twice is a duplicate: the writer skips it, and the benchmark refuses to
    # time a skip as a write.
    writer = LakeWriter(data_dir=tmp_path)
    bench_chain.ours_once(later, writer)
    with pytest.raises(AssertionError, match="nothing was written"):
        bench_chain.ours_once(later, writer)


def test_backfill_benchmark_runs_tiny_and_the_repeat_adds_no_rows():
    figs = bench_backfill.run(quick=True, repeats=1, rows=2_000)
    repeat = [f for f in figs if f.figure.startswith("repeat")]
    assert len(repeat) == 2 and all(f.ours == 0 and f.verdict == "pass" for f in repeat)
    assert "rewrote 0 bars" in repeat[0].note
    # The path's own work is measured apart from the writer, and the floor they set is stated.
    path = [f for f in figs if "without publishing" in f.figure]
    assert len(path) == 1 and path[0].ours and path[0].ours > 0
    assert "floor: writer" in figs[0].note


def test_the_backfill_benchmark_starts_from_the_providers_columnar_answer():
    table = datagen.candles_table(1_000, symbols=2)
    bars = bench_backfill.bars_by_symbol(table)
    assert sorted(bars) == ["NSE:SYM000", "NSE:SYM001"]
    first = bars["NSE:SYM000"]
    assert isinstance(first, BarBatch) and len(first) == 500
    row = table.slice(0, 1).to_pylist()[0]
    assert first[0] == Bar(*(row[name] for name in Bar._fields))


def test_queries_benchmark_runs_tiny_and_both_layouts_agree():
    figs = bench_queries.run(repeats=1, shape=datagen.TINY_MONTH)
    assert len(figs) == 6 and all(f.ours is not None for f in figs)
    assert "2 days x 3 slots" in figs[0].note


def test_main_writes_the_json_and_survives_a_failing_benchmark(tmp_path, monkeypatch):
    def boom(**_: object) -> list[object]:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(bench_chain, "run", boom)
    out = tmp_path / "bench.json"
    assert main(["--quick", "--only", "chain", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["figures"][0]["verdict"] == "n/a"
    assert "broken on purpose" in data["figures"][0]["note"]


def test_live_latency_attributes_each_message_to_the_first_poll_that_saw_its_seq():
    send_times = [10.0, 10.1, 10.2, 10.3]
    seen = [(10.5, 7), (11.0, 9), (12.0, 20)]  # seqs 1..6 were the warm-up quotes
    got = bench_live.latencies(seen, send_times, first_seq=7)
    assert got == pytest.approx([0.5, 0.9, 0.8, 1.7])
    assert bench_live.latencies([(10.5, 6)], send_times, first_seq=7) == []


def test_live_rss_flatness_compares_the_warm_window_with_the_end():
    samples = [(0, 50), (200, 90), (250, 100), (500, 100), (950, 104), (1000, 103)]
    assert bench_live.rss_flatness(samples, 1_000) == (100.0, 104.0, 104.0)
    with pytest.raises(ValueError):
        bench_live.rss_flatness([], 1_000)


def test_live_benchmark_runs_tiny_with_the_emulator_in_its_own_process():
    figs = bench_live.run(
        repeats=1, messages=2_000, long_messages=3_000, paced_seconds=0.5, flush_seconds=0.2
    )
    assert [f.unit for f in figs] == ["msg/s", "msg/s", "s", "s", "MB"]
    assert all(f.ours and f.ours > 0 for f in figs)
    assert figs[0].baseline and figs[0].ratio and figs[0].verdict in ("pass", "FAIL")
    assert "p99" in figs[2].note and figs[2].target.endswith("(1.2 s)")
