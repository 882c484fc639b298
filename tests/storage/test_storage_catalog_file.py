"""`ensure_catalog`: the catalog exists after any write, is kept current, never blocks ingestion."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from storage_samples import candle_rows

from storage.catalog import CatalogState, catalog_fingerprint, ensure_catalog
from storage.writer import LakeWriter


@contextmanager
def held_read_write(path: Path) -> Iterator[None]:
    """Another process holding `path` open read-write (as an analyst's session might)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def count(path: Path, view: str) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0])


def test_a_missing_catalog_is_created_and_its_views_see_later_writes(data_dir: Path) -> None:
    path = data_dir / "protrade.duckdb"
    assert ensure_catalog(data_dir) is CatalogState.CREATED
    assert count(path, "candles") == 0
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=3))
    assert count(path, "candles") == 3
    # no temporary or WAL file is left beside it; the stamp says which views it holds
    assert sorted(p.name for p in data_dir.iterdir()) == [
        ".protrade.duckdb.views",
        "lake",
        "protrade.duckdb",
    ]


def test_a_current_catalog_is_left_as_it_is(data_dir: Path) -> None:
    path = data_dir / "protrade.duckdb"
    ensure_catalog(data_dir)
    before = path.stat()
    assert ensure_catalog(data_dir) is CatalogState.CURRENT
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_an_outdated_catalog_is_replaced_by_the_current_views(data_dir: Path) -> None:
    path = data_dir / "protrade.duckdb"
    with duckdb.connect(str(path)) as conn:  # e.g. written by an earlier version
        conn.execute("CREATE VIEW candles AS SELECT 1 AS stale")
    assert ensure_catalog(data_dir) is CatalogState.REFRESHED
    LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=2))
    assert count(path, "candles") == 2
    with duckdb.connect(str(path), read_only=True) as conn:
        comments = {
            c
            for (c,) in conn.execute(
                "SELECT comment FROM duckdb_views() WHERE NOT internal"
            ).fetchall()
        }
    assert all(c.endswith(catalog_fingerprint(data_dir / "lake")) for c in comments)


def test_a_catalog_held_read_write_elsewhere_only_warns_and_writing_goes_on(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = data_dir / "protrade.duckdb"
    ensure_catalog(data_dir)
    (data_dir / ".protrade.duckdb.views").unlink()  # no stamp: the check must open the file
    with held_read_write(path), caplog.at_level(logging.WARNING, logger="storage.catalog"):
        assert ensure_catalog(data_dir) is CatalogState.LOCKED
        LakeWriter(data_dir=data_dir).write("candles", candle_rows(count=1))
    assert "open read-write in another process" in caplog.text
    assert count(path, "candles") == 1  # the views were there all along


def test_a_stamped_current_catalog_is_not_opened_even_when_held_elsewhere(
    data_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stamp beside the catalog says its views are current while the file is unchanged:
    the check opens no DuckDB, so an analyst's read-write session is no obstacle."""
    import storage.catalog

    path = data_dir / "protrade.duckdb"
    ensure_catalog(data_dir)

    def never(_path: Path) -> set[str]:
        raise AssertionError("a stamped, unchanged catalog was opened")

    monkeypatch.setattr(storage.catalog, "_stored_fingerprints", never)
    with held_read_write(path), caplog.at_level(logging.WARNING, logger="storage.catalog"):
        assert ensure_catalog(data_dir) is CatalogState.CURRENT
    assert "another process" not in caplog.text


def test_a_stamped_catalog_that_changed_since_is_checked_again(data_dir: Path) -> None:
    """An analyst's session wrote a view into the catalog after it was stamped: the stamp no
    longer matches the file, so the check opens it and replaces it (our views only)."""
    path = data_dir / "protrade.duckdb"
    ensure_catalog(data_dir)
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE VIEW analysts_own AS SELECT 1 AS x")
    assert ensure_catalog(data_dir) is CatalogState.REFRESHED
    assert ensure_catalog(data_dir) is CatalogState.CURRENT
    with duckdb.connect(str(path), read_only=True) as conn:
        names = {n for (n,) in conn.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert "analysts_own" not in names


def test_an_outdated_catalog_held_elsewhere_is_not_replaced(data_dir: Path) -> None:
    path = data_dir / "protrade.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE VIEW candles AS SELECT 1 AS stale")
    inode = path.stat().st_ino
    with held_read_write(path):
        assert ensure_catalog(data_dir) is CatalogState.LOCKED
    assert path.stat().st_ino == inode
    assert ensure_catalog(data_dir) is CatalogState.REFRESHED  # once it is free


def test_an_unwritable_data_dir_fails_softly(data_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")
    assert ensure_catalog(blocker / "data") is CatalogState.FAILED


@pytest.mark.parametrize("stamp", ["", "not a stamp\n", "0123abcd 1:2:3\n"])
def test_a_garbled_or_stale_stamp_is_not_trusted(data_dir: Path, stamp: str) -> None:
    """A stamp that is empty, unreadable or names another fingerprint and file sends the check
    to the catalog itself, which is current: the stamp is then written again, and trusted."""
    ensure_catalog(data_dir)
    stamp_file = data_dir / ".protrade.duckdb.views"
    stamp_file.write_text(stamp)
    assert ensure_catalog(data_dir) is CatalogState.CURRENT
    fingerprint, identity = stamp_file.read_text().split()
    assert fingerprint == catalog_fingerprint(data_dir / "lake")
    assert identity != "1:2:3"
