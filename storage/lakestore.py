"""The one seam between the lake and where its bytes live: a local folder or an S3 bucket.

Everything that writes, lists, reads or deletes lake objects (writer, compaction, journal,
status, the catalog's seeds) goes through a `LakeStore`, so the same code runs on a folder and
on an S3-compatible object store, and tests inject faults by wrapping a store, not by patching
`os.replace`.

Keys are `/`-separated paths relative to the store's root (the data dir):
`lake/option_chain/date=2026-12-01/underlying=NIFTY/<file>.parquet`.

Publishing is atomic on both: a reader never sees a partial object.
- Local: a hidden temporary name in the target folder, fsync, then `os.link` (create only if
  absent) or `os.replace` (overwrite), then fsync the folder.
- S3: one PUT at the final key (an object appears whole or not at all); `put_if_absent` sends
  `If-None-Match: *`, so a retried or duplicated run gets "412 Precondition Failed" and writes
  nothing. `obstore` is used because it can send conditional writes (pyarrow's and fsspec's
  S3 filesystems cannot) and reads the standard `AWS_*` variables itself.

S3 is configured only through the standard variables `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (or `AWS_DEFAULT_REGION`) and `AWS_ALLOW_HTTP=true` for a
plain-http endpoint. They are read where the S3 client is made, as every AWS SDK does; the
secret is never part of a repr, a log line or an error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from storage.errors import StorageError, UnsupportedLocationError

#: Bytes-like data, or a local file whose content is published (streamed, not read whole).
Payload = bytes | bytearray | memoryview | Path

_KEY_SEGMENT_RE = re.compile(r"[^/\x00]+")


class LakeStoreError(StorageError, OSError):
    """An object store operation failed (network, permission, server error); one sentence.

    An `OSError` too, so callers that already handle a full disk handle a failing store.
    """


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its key (relative to the store root), size and last change (UTC)."""

    key: str
    size: int
    modified: datetime

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def folder(self) -> str:
        return self.key.rpartition("/")[0]


@runtime_checkable
class LakeStore(Protocol):
    """Where the lake's objects live. Implementations: `LocalStore`, `S3Store`."""

    #: The root as a location string: an absolute path, or `s3://bucket/prefix`.
    @property
    def url(self) -> str: ...

    @property
    def is_local(self) -> bool: ...

    def uri(self, key: str) -> str:
        """What DuckDB or pyarrow open for `key`: a local path or an `s3://` URL."""
        ...

    def put_if_absent(self, key: str, data: Payload) -> bool:
        """Publish `data` at `key` unless an object is there; True if this call created it."""
        ...

    def put(self, key: str, data: Payload) -> None:
        """Publish `data` at `key`, replacing any object there (atomically for readers)."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, None if there is none."""
        ...

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix/` (recursively), sorted by key.

        Temporary files of writes in progress (hidden names) are never listed.
        """
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Remove these objects; a key already gone is not an error."""
        ...


def check_key(key: str) -> str:
    """`key` if it is a plain relative key (no empty, `.` or `..` segment, no NUL); else
    ValueError. A key can never name anything outside the store root."""
    if not isinstance(key, str) or not key or key.startswith("/"):
        raise ValueError(f"{key!r} is not a relative object key")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT_RE.fullmatch(segment):
            raise ValueError(f"{key!r} is not a plain object key")
    return key


def join_key(*parts: str) -> str:
    """Join key parts with `/` (empty parts are dropped); the result is checked."""
    return check_key("/".join(p.strip("/") for p in parts if p and p.strip("/")))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


# ------------------------------------------------------------------------------------ local


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: More parent folders than this (more than one key's chain of new folders) are fsynced by
#: several threads at once.
_SERIAL_FSYNCS = 4


def _make_dirs(folder: Path, root: Path) -> None:
    """Create `folder` (below `root`) and fsync the parent of every folder created."""
    _make_all_dirs([folder], root)


def _make_all_dirs(folders: Iterable[Path], root: Path) -> None:
    """Create `folders` (below `root`), then fsync each parent of a folder created once, however
    many new children it got: a backfill's first write makes 124 symbol folders in 31 new month
    folders, and each directory fsync waits milliseconds and costs CPU besides (pre-made
    folders took a third off that write's CPU for publishing). Many are fsynced at once.
    """
    parents: dict[Path, None] = {}
    for folder in folders:
        if folder.is_dir():  # the usual case: one stat, nothing to create
            continue
        root.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no data dir yet
        missing: list[Path] = []
        current = folder
        while not current.exists():
            missing.append(current)
            if current == root or current.parent == current:
                break
            current = current.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another writer made it first
                path.mkdir()
            parents[path.parent] = None
    if len(parents) > _SERIAL_FSYNCS:
        with ThreadPoolExecutor(max_workers=min(16, len(parents))) as pool:
            list(pool.map(fsync_dir, parents))
    else:
        for parent in parents:
            fsync_dir(parent)


class LocalStore:
    """A folder on a local (or mounted) file system."""

    is_local = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        #: Folders known to exist and to be inside the root (checked once each).
        self._ready: set[Path] = set()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        """The local path of `key`."""
        return self.root / check_key(key)

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def make_folders(self, keys: Iterable[str]) -> None:
        """Create the folders of `keys` ahead of a batch of puts: one fsync per parent folder
        for all its new children, not one per child (`put_if_absent` alone makes a key's
        folder as it needs it). Each folder is still checked to lie inside the root on its
        first put."""
        _make_all_dirs(dict.fromkeys(self.path(key).parent for key in keys), self.root)

    def _folder_for(self, key: str) -> Path:
        final = self.path(key)
        folder = final.parent
        if folder not in self._ready:
            _make_dirs(folder, self.root)
            # Resolved after creation: a symlink planted in the lake must not lead out of it.
            if not folder.resolve().is_relative_to(self.root):
                raise ValueError(f"{key!r} leads outside {self.root}")
            self._ready.add(folder)
        return folder

    def _write_temp(self, key: str, data: Payload) -> tuple[Path, Path]:
        """(folder, temp file) holding `data`, fsynced, under a hidden name in the key's folder.

        A local file (a Path) on the same file system is hard-linked, not copied: a compacted
        journal day can be gigabytes. The caller must not change that file afterwards.
        """
        for attempt in (1, 2):
            folder = self._folder_for(key)
            tmp = folder / f".{key.rpartition('/')[2]}.{uuid.uuid4().hex[:12]}.tmp"
            try:
                if isinstance(data, Path):
                    self._link_or_copy(data, tmp)
                else:
                    with tmp.open("wb") as out:
                        out.write(data)
                        out.flush()
                        os.fsync(out.fileno())
            except FileNotFoundError:
                tmp.unlink(missing_ok=True)
                if attempt == 2 or (isinstance(data, Path) and not data.exists()):
                    raise
                # A delete emptied and removed the folder since it was made: make it again.
                self._ready.discard(folder)
                continue
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return folder, tmp
        raise AssertionError("unreachable")

    @staticmethod
    def _link_or_copy(source: Path, tmp: Path) -> None:
        with source.open("rb") as src:
            os.fsync(src.fileno())  # the link publishes these very blocks: make them durable
        try:
            os.link(source, tmp)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        with source.open("rb") as src, tmp.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())

    def put_if_absent(self, key: str, data: Payload) -> bool:
        final = self.path(key)
        if final.exists():  # the usual duplicate: skip writing a temp file at all
            return False
        folder, tmp = self._write_temp(key, data)
        try:
            os.link(tmp, final)  # never replaces: fails if the name exists
            created = True
        except FileExistsError:
            created = False
        finally:
            tmp.unlink(missing_ok=True)
        if created:
            fsync_dir(folder)
        return created

    def put(self, key: str, data: Payload) -> None:
        folder, tmp = self._write_temp(key, data)
        try:
            os.replace(tmp, self.path(key))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(folder)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.path(prefix)
        found: list[ObjectInfo] = []
        if not base.is_dir():
            return found
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not _is_hidden(d)]
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if _is_hidden(name):
                    continue
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    st = os.stat(os.path.join(folder, name))
                    found.append(
                        ObjectInfo(
                            f"{rel}/{name}", st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)
                        )
                    )
        found.sort(key=lambda o: o.key)
        return found

    def delete(self, keys: Iterable[str]) -> None:
        """Remove these files, then every folder they leave empty (up to the root): expired
        journal days and drained manifest folders do not pile up as empty directories. A
        writer racing into a removed folder makes it again (`_write_temp`)."""
        folders: set[Path] = set()
        for key in keys:
            path = self.path(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                folders.add(path.parent)
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
            self._prune(folder)

    def _prune(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (the usual case), or gone already
                return
            self._ready.discard(folder)
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder.parent)
            folder = folder.parent

    def stale_temp_files(self, prefix: str, older_than: float) -> list[Path]:
        """Hidden temporary files below `prefix` last changed before `older_than` (epoch s):
        a crashed writer's leftovers (S3 has none: a PUT is whole or absent)."""
        base = self.path(prefix)
        stale: list[Path] = []
        if not base.is_dir():
            return stale
        for folder, _dirs, files in os.walk(base):
            for name in files:
                if _is_hidden(name) and name.endswith(".tmp"):
                    path = Path(folder) / name
                    with contextlib.suppress(FileNotFoundError):
                        if path.stat().st_mtime < older_than:
                            stale.append(path)
        return stale


# --------------------------------------------------------------------------------------- S3


@dataclass(frozen=True, slots=True)
class S3Config:
    """S3 connection settings from the standard `AWS_*` variables; the secret never shows."""

    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    allow_http: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        env = os.environ if environ is None else environ
        return cls(
            endpoint=env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            allow_http=env.get("AWS_ALLOW_HTTP", "").strip().lower() in ("1", "true", "yes"),
        )

    @property
    def endpoint_host(self) -> str | None:
        """`host:port` of a custom endpoint (what DuckDB's S3 secret wants), None for AWS."""
        if not self.endpoint:
            return None
        parsed = urlsplit(self.endpoint)
        return parsed.netloc or parsed.path

    @property
    def use_ssl(self) -> bool:
        return not (self.endpoint or "").startswith("http://")


def _describe(exc: BaseException) -> str:
    # obstore's messages carry a long debug dump: the first line says what failed.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class S3Store:
    """A prefix in an S3-compatible bucket, through obstore."""

    is_local = False

    def __init__(self, bucket: str, prefix: str = "", config: S3Config | None = None) -> None:
        from obstore.store import S3Store as _ObS3Store

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config or S3Config.from_environ()
        options: dict[str, object] = {}
        if self.config.endpoint:
            options["endpoint"] = self.config.endpoint
        if self.config.region:
            options["region"] = self.config.region
        if self.config.access_key_id:
            options["access_key_id"] = self.config.access_key_id
        if self.config.secret_access_key:
            options["secret_access_key"] = self.config.secret_access_key
        # A custom endpoint (SeaweedFS, MinIO, ...) is addressed by path, not by host name.
        if self.config.endpoint:
            options["virtual_hosted_style_request"] = False
        client_options = {"allow_http": self.config.allow_http, "timeout": "60s"}
        self._store = _ObS3Store(
            bucket,
            prefix=self.prefix or None,
            config=options,  # type: ignore[arg-type]
            client_options=client_options,  # type: ignore[arg-type]
            # obstore's default (10 retries, up to 3 minutes) made an unreachable endpoint take
            # ~15 s to fail a listing; callers retry whole operations themselves (the registry
            # retries runs' work, a flow run is retried), so fail within seconds, after a few
            # quick retries of a transient error.
            retry_config={
                "max_retries": 3,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2.0,
                },
                "retry_timeout": timedelta(seconds=20),
            },
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def uri(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"

    def _error(self, action: str, key: str, exc: BaseException) -> LakeStoreError:
        return LakeStoreError(f"S3 {action} of {self.uri(key)} failed: {_describe(exc)}")

    def _body(self, data: Payload) -> object:
        if isinstance(data, Path | bytes):
            return data
        # Any buffer (a pyarrow Buffer's memoryview, ...) as flat bytes, without a copy.
        view = memoryview(data)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")

    def put_if_absent(self, key: str, data: Payload) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        check_key(key)
        try:
            obstore.put(self._store, key, self._body(data), mode="create")  # type: ignore[arg-type]
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:
            raise self._error("PUT", key, exc) from None
        return True

    def put(self, key: str, data: Payload) -> None:
        import obstore

        check_key(key)
        try:
            obstore.put(self._store, key, self._body(data))  # type: ignore[arg-type]
        except Exception as exc:
            raise self._error("PUT", key, exc) from None

    def get(self, key: str) -> bytes:
        import obstore
        from obstore.exceptions import NotFoundError

        check_key(key)
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            raise FileNotFoundError(self.uri(key)) from None
        except Exception as exc:
            raise self._error("GET", key, exc) from None

    def head(self, key: str) -> ObjectInfo | None:
        import obstore
        from obstore.exceptions import NotFoundError

        check_key(key)
        try:
            meta = obstore.head(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self._error("HEAD", key, exc) from None
        return ObjectInfo(key, int(meta["size"]), meta["last_modified"])

    def list(self, prefix: str) -> list[ObjectInfo]:
        import obstore

        check_key(prefix)
        found: list[ObjectInfo] = []
        try:
            for batch in obstore.list(self._store, prefix + "/", chunk_size=1000):
                for meta in batch:
                    key = str(meta["path"])
                    if not _is_hidden(key.rpartition("/")[2]):
                        found.append(ObjectInfo(key, int(meta["size"]), meta["last_modified"]))
        except Exception as exc:
            raise self._error("LIST", prefix, exc) from None
        found.sort(key=lambda o: o.key)
        return found

    def delete(self, keys: Iterable[str]) -> None:
        import obstore
        from obstore.exceptions import NotFoundError

        batch = [check_key(k) for k in keys]
        for start in range(0, len(batch), 1000):  # S3's DeleteObjects takes up to 1,000 keys
            chunk = batch[start : start + 1000]
            try:
                obstore.delete(self._store, chunk)
            except (NotFoundError, FileNotFoundError):
                continue
            except Exception as exc:
                raise self._error("DELETE", chunk[0], exc) from None


# ---------------------------------------------------------------------------------- opening


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed `PROTRADE_DATA_DIR`: a local folder or an S3 bucket and prefix."""

    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def url(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __str__(self) -> str:
        return self.url


def parse_location(location: str | Path, *, setting: str = "PROTRADE_DATA_DIR") -> Location:
    """A path, a `file://` URI or `s3://bucket[/prefix]` as a `Location`; anything else is an
    UnsupportedLocationError naming `setting`."""
    if isinstance(location, Path):
        return Location(path=location.expanduser().resolve())
    text = str(location).strip()
    parsed = urlsplit(text)
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        if not bucket:
            raise UnsupportedLocationError(f"{setting}={text!r}: an s3:// URL needs a bucket")
        if prefix:
            try:
                check_key(prefix)
            except ValueError:
                raise UnsupportedLocationError(
                    f"{setting}={text!r}: the prefix must be plain path segments"
                ) from None
        return Location(bucket=bucket, prefix=prefix)
    if parsed.scheme == "file":
        return Location(path=Path(unquote(parsed.path)).expanduser().resolve())
    if parsed.scheme == "" or re.fullmatch(r"[A-Za-z]", parsed.scheme):
        return Location(path=Path(text).expanduser().resolve())
    raise UnsupportedLocationError(
        f"{setting}={text!r}: use a local path, a file:// URI or s3://bucket/prefix "
        f"(not {parsed.scheme}://)"
    )


def open_store(location: Location | str | Path) -> LocalStore | S3Store:
    """The store for a location (a `Location`, a path, `file://…` or `s3://…`)."""
    loc = location if isinstance(location, Location) else parse_location(location)
    if loc.path is not None:
        return LocalStore(loc.path)
    assert loc.bucket is not None
    return S3Store(loc.bucket, loc.prefix)


def iter_folders(objects: Iterable[ObjectInfo]) -> Iterator[tuple[str, list[ObjectInfo]]]:
    """Group a listing by folder: (folder key, its objects), folders in key order."""
    groups: dict[str, list[ObjectInfo]] = {}
    for obj in objects:
        groups.setdefault(obj.folder, []).append(obj)
    for folder in sorted(groups):
        yield folder, groups[folder]
