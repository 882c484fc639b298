"""The storage seam: the same object semantics on a local folder and on S3 (SeaweedFS), and the
local store's own mechanics (durable publication, no temp file left, no empty folder left)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import storage.lakestore
from storage.lakestore import LocalStore, S3Config, check_key
from storage.paths import store_for


def test_put_if_absent_creates_once_and_never_replaces(any_data_dir) -> None:
    store = store_for(any_data_dir)
    assert store.put_if_absent("lake/x/a.bin", b"first") is True
    assert store.put_if_absent("lake/x/a.bin", b"second") is False
    assert store.get("lake/x/a.bin") == b"first"
    info = store.head("lake/x/a.bin")
    assert info is not None and info.size == 5 and info.name == "a.bin"
    assert store.head("lake/x/missing.bin") is None
    with pytest.raises(FileNotFoundError):
        store.get("lake/x/missing.bin")


def test_put_replaces_and_a_buffer_is_published_as_its_bytes(any_data_dir) -> None:
    import pyarrow as pa

    store = store_for(any_data_dir)
    store.put("lake/x/b.bin", b"old")
    store.put("lake/x/b.bin", memoryview(pa.py_buffer(b"new bytes")))
    assert store.get("lake/x/b.bin") == b"new bytes"


def test_a_local_file_is_published_whole(any_data_dir, tmp_path: Path) -> None:
    source = tmp_path / "merged.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    store = store_for(any_data_dir)
    assert store.put_if_absent("lake/x/big.bin", source)
    assert store.get("lake/x/big.bin") == source.read_bytes()
    source.unlink()  # the caller's file may go: the published one stays
    assert store.head("lake/x/big.bin").size == 3 * 1024 * 1024 + 7  # type: ignore[union-attr]


def test_list_is_recursive_sorted_and_bounded_by_the_prefix(any_data_dir) -> None:
    store = store_for(any_data_dir)
    for key in ("lake/a/2.p", "lake/a/1.p", "lake/a/sub/3.p", "lake/ab/4.p", "other/5.p"):
        store.put_if_absent(key, b"x")
    assert [o.key for o in store.list("lake/a")] == ["lake/a/1.p", "lake/a/2.p", "lake/a/sub/3.p"]
    assert [o.folder for o in store.list("lake/ab")] == ["lake/ab"]
    assert store.list("lake/none") == []


def test_delete_is_idempotent(any_data_dir) -> None:
    store = store_for(any_data_dir)
    store.put_if_absent("lake/d/1.p", b"x")
    store.put_if_absent("lake/d/2.p", b"x")
    store.delete(["lake/d/1.p", "lake/d/missing.p"])
    store.delete(["lake/d/1.p"])
    assert [o.key for o in store.list("lake/d")] == ["lake/d/2.p"]


def test_eight_threads_racing_one_key_leave_exactly_one_object(any_data_dir) -> None:
    store = store_for(any_data_dir)
    barrier = threading.Barrier(8)
    won: list[int] = []

    def race(i: int) -> None:
        barrier.wait(timeout=30)
        if store.put_if_absent("lake/race/one.p", f"writer {i}".encode() * 1000):
            won.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1
    assert store.get("lake/race/one.p") == f"writer {won[0]}".encode() * 1000
    assert [o.key for o in store.list("lake/race")] == ["lake/race/one.p"]


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/.", "a\x00b"])
def test_a_key_that_could_leave_the_root_is_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_the_s3_secret_never_shows_in_a_repr() -> None:
    config = S3Config.from_environ(
        {"AWS_SECRET_ACCESS_KEY": "very-secret", "AWS_ACCESS_KEY_ID": "AK", "AWS_REGION": "r"}
    )
    assert "very-secret" not in repr(config)


# --------------------------------------------------------------------------- local mechanics


def test_a_local_publish_fsyncs_the_file_then_its_folder_after_the_link(
    tmp_path: Path, monkeypatch
) -> None:
    store = LocalStore(tmp_path)
    store.put_if_absent("lake/x/warm.p", b"x")  # the folder exists: only the file is seen
    events: list[str] = []
    real_link, real_fsync, real_fsync_dir = os.link, os.fsync, storage.lakestore.fsync_dir
    monkeypatch.setattr(
        storage.lakestore.os, "link", lambda s, d: (events.append("link"), real_link(s, d))[1]
    )
    monkeypatch.setattr(
        storage.lakestore.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1]
    )
    monkeypatch.setattr(
        storage.lakestore,
        "fsync_dir",
        lambda f: (events.append(f"fsync_dir {Path(f).name}"), real_fsync_dir(f))[1],
    )
    assert store.put_if_absent("lake/x/a.p", b"data")
    # The data is durable before its name appears; the name is durable before we return (the
    # last fsync is the folder's own, inside fsync_dir).
    assert events == ["fsync", "link", "fsync_dir x", "fsync"]
    assert not [p for p in (tmp_path / "lake/x").iterdir() if p.name.startswith(".")]


def test_a_failed_local_write_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    import errno

    store = LocalStore(tmp_path)
    store.put_if_absent("lake/x/warm.p", b"x")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.lakestore.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        store.put_if_absent("lake/x/a.p", b"data")
    assert sorted(p.name for p in (tmp_path / "lake/x").iterdir()) == ["warm.p"]


def test_deleting_a_folders_last_file_removes_the_folder_and_writing_there_again_works(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    store.put_if_absent("lake/journal/date=2026-01-01/provider=nse/a.p", b"x")
    store.put_if_absent("lake/journal/date=2026-01-02/provider=nse/b.p", b"x")
    store.delete(["lake/journal/date=2026-01-01/provider=nse/a.p"])
    assert sorted(p.name for p in (tmp_path / "lake/journal").iterdir()) == ["date=2026-01-02"]
    # The store had made (and remembered) the removed folder: it makes it again.
    assert store.put_if_absent("lake/journal/date=2026-01-01/provider=nse/c.p", b"y")
    assert store.get("lake/journal/date=2026-01-01/provider=nse/c.p") == b"y"


def test_a_local_file_on_the_same_file_system_is_linked_not_copied(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    source = tmp_path / "data" / "scratch.bin"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"x" * 4096)
    assert store.put_if_absent("lake/x/linked.bin", source)
    assert store.path("lake/x/linked.bin").stat().st_ino == source.stat().st_ino


def test_stale_temp_files_are_found_by_age(tmp_path: Path) -> None:
    import time

    store = LocalStore(tmp_path)
    store.put_if_absent("lake/x/a.p", b"x")
    old, new = tmp_path / "lake/x/.a.p.1.tmp", tmp_path / "lake/x/.b.p.2.tmp"
    old.write_bytes(b"partial")
    new.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.stale_temp_files("lake", time.time() - 3600) == [old]
    assert [o.name for o in store.list("lake")] == ["a.p"]  # temp files are never listed
