"""The S3 benchmark: a quick run against its own SeaweedFS, and the parts that keep it honest.

No timing assertions: only that every figure comes out with a value, a baseline and a verdict,
that the repeat writes nothing on S3, and that the run leaves no server and no AWS_* behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks import bench_s3
from benchmarks.__main__ import BENCHMARKS
from deployments.cluster.seaweed import SeaweedS3

AWS_NAMES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


def test_s3_benchmark_runs_quick_with_values_and_verdicts_and_cleans_up(monkeypatch):
    # A developer's own AWS settings must survive the run; unset ones must stay unset.
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    started: list[SeaweedS3] = []
    seen_env: list[dict[str, str | None]] = []
    real_server, real_writer = bench_s3.seaweed_s3, bench_s3.writer_figures

    @contextmanager
    def recording(root: Path, **kwargs: object) -> Iterator[SeaweedS3]:
        with real_server(root, **kwargs) as server:  # type: ignore[arg-type]
            started.append(server)
            yield server

    def writer_figures(*args: object) -> list[object]:
        seen_env.append({name: os.environ.get(name) for name in AWS_NAMES})
        return real_writer(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_s3, "seaweed_s3", recording)
    monkeypatch.setattr(bench_s3, "writer_figures", writer_figures)

    figs = bench_s3.run(quick=True)

    assert [f.benchmark for f in figs] == ["s3"] * 6
    for f in figs:
        assert f.ours is not None and f.baseline is not None, f
        assert f.verdict in ("pass", "FAIL") and f.target != "-", f
    timed = [f for f in figs if f.unit == "s"]
    assert len(timed) == 4 and all(f.ratio and f.ratio > 0 for f in timed)
    assert all("S3 <=" in f.target for f in timed)
    rows, files = (f for f in figs if f.unit in ("rows", "files"))
    assert (rows.ours, rows.baseline, rows.verdict) == (0, 0, "pass")
    assert (files.ours, files.baseline, files.verdict) == (0, 0, "pass")
    assert "rewrote 0 bars" in rows.note
    assert "uploaded to S3" in next(f for f in figs if "latest chain" in f.figure).note

    # While it ran, the AWS_* variables named the benchmark's server...
    (server,) = started
    assert seen_env == [{name: server.env[name] for name in AWS_NAMES}]
    # ...and afterwards the server is gone and the environment is as it was.
    assert server.process is not None and server.process.poll() is not None
    assert os.environ["AWS_REGION"] == "ap-south-1"
    assert not {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(os.environ)


def test_environment_restores_set_and_unset_names_even_on_error(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with (
        pytest.raises(RuntimeError),
        bench_s3.environment({"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://x"}),
    ):
        assert os.environ["AWS_REGION"] == "us-east-1"
        assert os.environ["AWS_ENDPOINT_URL"] == "http://x"
        raise RuntimeError("a measurement failed")
    assert os.environ["AWS_REGION"] == "eu-west-1"
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_a_failing_section_is_one_not_available_figure_with_its_reason():
    def broken() -> list[object]:
        raise ConnectionError("S3 PUT failed")

    (fig,) = bench_s3._section("latest chain", broken)  # type: ignore[arg-type]
    assert (fig.benchmark, fig.figure, fig.verdict, fig.ours) == ("s3", "latest chain", "n/a", None)
    assert "ConnectionError: S3 PUT failed" in fig.note


def test_upload_lake_copies_every_object_under_the_same_key(tmp_path):
    from storage.lakestore import LocalStore

    source = LocalStore(tmp_path / "src")
    source.put("lake/x/date=2026-03-04/a.parquet", b"a" * 10)
    source.put("lake/y/b.parquet", b"bb")
    source.put("other/c.txt", b"not lake")  # outside lake/: not copied
    assert bench_s3.upload_lake(tmp_path / "src", str(tmp_path / "dst")) == (2, 12)
    target = LocalStore(tmp_path / "dst")
    assert [o.key for o in target.list("lake")] == [
        "lake/x/date=2026-03-04/a.parquet",
        "lake/y/b.parquet",
    ]
    assert target.get("lake/y/b.parquet") == b"bb" and target.head("other/c.txt") is None


def test_the_s3_benchmark_is_part_of_make_bench():
    assert BENCHMARKS["s3"] == "benchmarks.bench_s3"
