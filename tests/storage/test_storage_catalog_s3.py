"""The views and the in-process queries on a lake on S3 (SeaweedFS), and the catalog file as an
analyst opens it: from Python with a secret of their own, and from the DuckDB CLI, offline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from storage_samples import SAMPLES, T0, candle_rows, option_rows, tick_rows

from storage import duck
from storage.catalog import (
    ANALYSIS_VIEWS,
    CatalogState,
    connect,
    ensure_catalog,
    is_vanished_file_error,
    lake_uri,
    refresh_catalog,
    run_readonly_query,
    with_vanished_file_retry,
)
from storage.lakestore import S3Config, S3Store
from storage.paths import catalog_path, store_for
from storage.queries import Spot, spot_by_minute
from storage.schemas import DATASETS
from storage.writer import LakeWriter

#: What the README tells an analyst to run in the DuckDB CLI: the secret from the standard
#: variables, nothing stored. Keep it identical to the README's block.
CLI_SECRET_SQL = """\
CREATE SECRET (
    TYPE s3,
    KEY_ID getenv('AWS_ACCESS_KEY_ID'),
    SECRET getenv('AWS_SECRET_ACCESS_KEY'),
    REGION getenv('AWS_REGION'),
    ENDPOINT regexp_replace(getenv('AWS_ENDPOINT_URL'), '^https?://', ''),
    URL_STYLE 'path',
    USE_SSL NOT starts_with(getenv('AWS_ENDPOINT_URL'), 'http://')
);"""
#: The same from Python, as the README shows it (Python's DuckDB has no getenv): parameters.
PYTHON_SECRET_SQL = (
    "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL ?)"
)


def write_every_dataset(data_dir: Path | str) -> None:
    # A fixed ingestion clock: a local and an S3 lake written alike hold the same rows.
    writer = LakeWriter(data_dir=data_dir, clock=lambda: T0)
    for dataset, make in SAMPLES.items():
        writer.write(dataset, make())
    writer.write("candles", candle_rows(symbol="NSE:M&M", count=2))
    writer.write("option_chain", option_rows(snapshot_ts=T0 + timedelta(minutes=3)))


def analyst_connection(path: Path) -> duckdb.DuckDBPyConnection:
    """The catalog opened read-only as the README shows a Python analyst, secret from env."""
    con = duckdb.connect(str(path), read_only=True)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    con.execute(
        PYTHON_SECRET_SQL,
        [
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ["AWS_REGION"],
            endpoint.split("://", 1)[1],
            endpoint.startswith("https://"),
        ],
    )
    return con


def counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    views = [n for s in DATASETS.values() for n in (s.name, f"{s.name}_raw")]
    return {
        v: conn.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0]
        for v in [*views, *ANALYSIS_VIEWS]
    }


def rows(conn: duckdb.DuckDBPyConnection, view: str) -> list[tuple[object, ...]]:
    return conn.execute(f'SELECT * FROM "{view}" ORDER BY ALL').fetchall()


def test_every_view_on_s3_answers_as_on_a_local_lake(s3_data_dir: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    write_every_dataset(local)
    write_every_dataset(s3_data_dir)
    on_s3, on_disk = connect(s3_data_dir), connect(local)
    assert counts(on_s3) == counts(on_disk)
    assert all(n > 0 for n in counts(on_s3).values())
    for view in [*DATASETS, *ANALYSIS_VIEWS]:
        assert rows(on_s3, view) == rows(on_disk, view), view
    # The views really read S3: the lake's objects, not a local copy.
    glob = f"{lake_uri(s3_data_dir)}/ticks/date=2*/**/*.parquet"
    (file,) = on_s3.execute("SELECT DISTINCT filename FROM read_parquet(?)", [glob]).fetchone()
    assert file.startswith(f"{s3_data_dir}/lake/ticks/date=2026-11-23/")


def test_a_local_lake_never_loads_httpfs(data_dir: Path) -> None:
    conn = connect(data_dir)
    loaded = conn.execute(
        "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
    ).fetchall()
    assert loaded == [(False,)]


def test_an_empty_s3_lake_gives_typed_empty_views_and_reading_writes_nothing(
    s3_data_dir: str,
) -> None:
    conn = connect(s3_data_dir)
    assert set(counts(conn).values()) == {0}
    described = [c[:2] for c in conn.execute("DESCRIBE option_chain").fetchall()]
    assert described[0] == ("snapshot_ts", "TIMESTAMP WITH TIME ZONE")
    assert store_for(s3_data_dir).list("lake") == []  # a reader seeds nothing


def test_the_catalog_of_an_s3_lake_is_local_reads_s3_and_stores_no_secret(
    s3_data_dir: str, s3_env: dict[str, str]
) -> None:
    assert ensure_catalog() is CatalogState.CREATED
    path = catalog_path()
    assert path == Path(os.environ["PROTRADE_CATALOG"])  # the configured local file
    assert ensure_catalog() is CatalogState.CURRENT
    write_every_dataset(s3_data_dir)  # after the catalog: its views see later writes
    with analyst_connection(path) as conn:
        assert counts(conn) == counts(connect(s3_data_dir))
    with duckdb.connect(str(path), read_only=True) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM duckdb_views() WHERE view_name = 'ticks_raw'"
        ).fetchone()
        assert f"'{s3_data_dir}/lake/ticks/date=*/**/*.parquet'" in sql
        assert conn.execute("SELECT count(*) FROM duckdb_secrets()").fetchone() == (0,)
    secret = s3_env["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in path.read_bytes()
    assert not list(path.parent.glob("*.wal")) and not list(path.parent.glob(".*.tmp"))


def test_the_duckdb_cli_reads_the_s3_views_with_the_readme_secret_offline(
    s3_data_dir: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    write_every_dataset(s3_data_dir)
    refresh = refresh_catalog()
    # A home of its own: the CLI finds httpfs only where we install it (no network, no cache).
    home = tmp_path / "home"
    assert duck.install_httpfs(home / ".duckdb" / "extensions")
    sql = (
        f"{CLI_SECRET_SQL}\n.mode csv\n"
        "SELECT count(*) FROM option_chain; SELECT count(*) FROM candles_raw; "
        "SELECT count(*) FROM oi_summary;"
    )
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""), **s3_env}
    cli = [str(Path(sys.executable).with_name("duckdb")), "-readonly", str(refresh.path)]
    done = subprocess.run(cli, input=sql, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    got = [int(line) for line in done.stdout.splitlines() if line.strip().isdigit()]
    expected = counts(connect(s3_data_dir))
    assert got == [expected["option_chain"], expected["candles_raw"], expected["oi_summary"]]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr
    # The README's other way: the statement in ~/.duckdbrc (it holds no credential), run by
    # every session the CLI starts, `-c` included.
    (home / ".duckdbrc").write_text(CLI_SECRET_SQL + "\n")
    query = "SELECT count(*) FROM candles"
    done = subprocess.run(
        [*cli, "-csv", "-noheader", "-c", query],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # (the rc file's statement prints its own "Success" table first)
    assert done.stdout.split()[-1] == str(expected["candles"])
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in (home / ".duckdbrc").read_text()


def test_sandboxed_queries_on_s3_read_the_lake_and_nothing_else(
    s3_data_dir: str, s3_env: dict[str, str], seaweed
) -> None:
    LakeWriter().write("candles", candle_rows(count=3))
    # Another prefix of the same bucket, readable with the same credentials: still refused.
    other = S3Store(seaweed.bucket, f"{s3_data_dir.rpartition('/')[2]}-other")
    empty = pa.table({"x": [1]})
    sink = pa.BufferOutputStream()
    pq.write_table(empty, sink)
    other.put("x.parquet", sink.getvalue().to_pybytes())
    lake = lake_uri()
    assert run_readonly_query(
        "SELECT count(*) FROM read_parquet(?)", params=[f"{lake}/candles/date=*/**/*.parquet"]
    )[1] == [(3,)]
    for outside in (
        other.uri("x.parquet"),
        f"{s3_data_dir}/lakeside/x.parquet",
        "/etc/hostname",
        "http://127.0.0.1:9/x.parquet",
    ):
        with pytest.raises(duckdb.PermissionException):
            run_readonly_query("SELECT * FROM read_parquet(?)", params=[outside])
    # DuckDB checks the text of the URL, `..` included: the request then fails at the server
    # (its signature no longer matches the path), it does not reach the other prefix.
    with pytest.raises(duckdb.Error, match="403"):
        escape = f"{lake}/../../{other.prefix}/x.parquet"
        run_readonly_query("SELECT * FROM read_parquet(?)", params=[escape])
    _, secrets = run_readonly_query("SELECT secret_string FROM duckdb_secrets()")
    assert "secret=redacted" in secrets[0][0]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in secrets[0][0]
    with pytest.raises(duckdb.Error, match="unredacted secrets is disabled"):
        run_readonly_query("SELECT * FROM duckdb_secrets(redact := false)")
    with pytest.raises(duckdb.CatalogException):  # the CLI's getenv() is not in Python's DuckDB
        run_readonly_query("SELECT getenv('AWS_SECRET_ACCESS_KEY')")


def test_an_s3_object_gone_under_a_query_is_recognised_and_retried_once(s3_data_dir: str) -> None:
    LakeWriter().write("candles", candle_rows(count=2))
    store = store_for()
    (key,) = [o.key for o in store.list("lake/candles") if not o.name.startswith("_")]
    conn = connect()
    gone = store.uri(key.replace(".parquet", "-gone.parquet"))
    with pytest.raises(duckdb.IOException) as caught:
        conn.execute("SELECT count(*) FROM read_parquet(?)", [gone]).fetchall()
    assert is_vanished_file_error(caught.value), str(caught.value)
    calls: list[str] = []

    def read() -> int:
        calls.append("x")
        target = gone if len(calls) == 1 else store.uri(key)
        return int(conn.execute("SELECT count(*) FROM read_parquet(?)", [target]).fetchone()[0])

    assert with_vanished_file_retry(read) == 2 and len(calls) == 2


def test_the_secret_never_shows_in_errors_or_logs(
    s3_data_dir: str, s3_env: dict[str, str], monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    LakeWriter().write("candles", candle_rows(count=1))
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    texts: list[str] = []
    with pytest.raises(duckdb.Error) as bad_sql:
        run_readonly_query("SELECT nope FROM candles")
    texts.append(str(bad_sql.value))
    # Wrong credentials, then no server at all: each fails with DuckDB's words, no secret.
    wrong = "wrong-" + secret
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(duckdb.Error) as denied:
        connect()
    texts.append(str(denied.value))
    assert "403" in texts[-1]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(duckdb.Error) as down:
        connect()
    texts.append(str(down.value))
    # A secret DuckDB refuses is reported without the statement's values.
    closed = duckdb.connect()
    closed.close()
    with pytest.raises(duck.DuckSetupError) as refused:
        duck.create_s3_secret(closed, S3Config.from_environ())
    texts.append(str(refused.value))
    for text in [*texts, caplog.text]:
        assert secret not in text and wrong not in text


def test_httpfs_is_installed_for_the_cli_once_and_a_failure_only_warns(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(duck, "_installed", {})
    target = tmp_path / "extensions"
    assert duck.install_httpfs(target)
    (installed,) = target.glob(f"v{duckdb.__version__}/*/httpfs.duckdb_extension")
    before = installed.stat().st_mtime_ns
    monkeypatch.setattr(duck, "_installed", {})  # as a new process would
    assert duck.install_httpfs(target)
    assert installed.stat().st_mtime_ns == before  # found, not copied again
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="storage.duck"):
        assert not duck.install_httpfs(blocked)
        assert not duck.install_httpfs(blocked)  # tried once per process: one warning
    assert caplog.text.count("could not install httpfs") == 1


def test_without_the_httpfs_wheel_s3_is_one_clear_sentence(s3_data_dir: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb_extension_httpfs", None)
    with pytest.raises(duck.DuckSetupError) as caught:
        connect()
    assert str(caught.value) == (
        f"reading the lake on S3 needs the package duckdb-extension-httpfs=={duckdb.__version__} "
        "(duckdb's release); pip install it"
    )


def test_the_spot_of_a_minute_is_found_on_s3(s3_data_dir: str) -> None:
    writer = LakeWriter()
    m1, m2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    writer.write("candles", candle_rows(count=3))
    ticks = tick_rows(capture_id="cap-1", symbols=("NSE:NIFTY",), count=1, start=m1)
    ticks[0]["price"] = 24011.0
    writer.write("ticks", ticks)
    writer.write("option_chain", option_rows(snapshot_ts=m2 + timedelta(seconds=9)))
    assert spot_by_minute(s3_data_dir, "NIFTY", "NSE:NIFTY", [T0, m1, m2]) == {
        T0: Spot(1.5, "candles"),
        m1: Spot(24011.0, "ticks"),
        m2: Spot(24123.4, "chain"),
    }


def test_the_readme_shows_the_secret_statements_these_tests_run() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert CLI_SECRET_SQL in readme
    assert PYTHON_SECRET_SQL in readme
