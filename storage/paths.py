"""Where the store lives (a folder or an S3 prefix), where its catalog is, and how instrument
names become safe path segments."""

from __future__ import annotations

import re
from pathlib import Path

from storage.errors import InvalidInstrumentName, UnsupportedLocationError
from storage.lakestore import LakeStore, Location, open_store, parse_location

DATA_DIR_ENV = "PROTRADE_DATA_DIR"
DEFAULT_DATA_DIR = "./data"
CATALOG_FILE = "protrade.duckdb"

#: Longest instrument name accepted, in characters.
MAX_NAME_CHARS = 200
#: Longest encoded segment: leaves room for `underlying=` under the usual 255-byte name limit.
MAX_SEGMENT_CHARS = 240

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SEGMENT_RE = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+")


#: A data dir as callers pass it: a path, a `file://` URI or `s3://bucket/prefix`; None means
#: the configured one.
DataDir = Path | str | None

#: The lake's folder (key prefix) below the data dir: one folder per dataset below it.
LAKE = "lake"

#: The store of this process: set by the flows' settings (`PROTRADE_DATA_DIR`, read there once
#: per run or command); None until then, meaning `DEFAULT_DATA_DIR`. Storage never reads the
#: environment: a caller that knows its store passes `data_dir=` and skips this altogether.
_configured: Location | None = None
#: The analysts' catalog file (`PROTRADE_CATALOG`), set by the flows' settings; None: the
#: default (`catalog_path`).
_configured_catalog: Path | None = None
_stores: dict[str, LakeStore] = {}


def configure_data_dir(location: DataDir) -> Location | None:
    """Make `location` (a path, `file://` or `s3://` URI; None: the default) the store that
    calls without `data_dir=` use. Returns the previous setting, for a caller that restores it."""
    global _configured
    previous = _configured
    _configured = None if location is None else parse_location(location)
    return previous


def configure_catalog(path: Path | str | None) -> Path | None:
    """Make `path` the catalog file (`PROTRADE_CATALOG`; None: the default); the previous."""
    global _configured_catalog
    previous = _configured_catalog
    _configured_catalog = None if path is None else Path(path).expanduser().resolve()
    return previous


def data_location(data_dir: DataDir = None) -> Location:
    """`data_dir` parsed, or the configured store, else `./data`."""
    if data_dir is not None:
        return data_dir if isinstance(data_dir, Location) else parse_location(data_dir)
    return _configured if _configured is not None else parse_location(DEFAULT_DATA_DIR)


def store_for(data_dir: DataDir | LakeStore = None) -> LakeStore:
    """The `LakeStore` of `data_dir` (default: the configured store); one per location.

    A store passes through as it is: callers (and tests injecting faults) may hand one in
    wherever a data dir is accepted."""
    if data_dir is not None and not isinstance(data_dir, str | Path | Location):
        return data_dir
    loc = data_location(data_dir)
    store = _stores.get(loc.url)
    if store is None:
        store = _stores[loc.url] = open_store(loc)
    return store


def data_dir() -> Path:
    """The configured store as a local folder; UnsupportedLocationError when it is on S3
    (callers that also work on S3 use `store_for()` instead)."""
    return local_path(data_location())


def local_path(location: DataDir) -> Path:
    """The local folder of a location; UnsupportedLocationError for an `s3://` one."""
    loc = data_location(location)
    if loc.path is None:
        raise UnsupportedLocationError(
            f"{DATA_DIR_ENV}={loc.url} is on S3, and this needs a local folder"
        )
    return loc.path


def resolve_location(location: Path | str) -> Path:
    """A local store location (a path or a `file://` URI) as an absolute path."""
    return local_path(str(location) or DEFAULT_DATA_DIR)


def lake_root(data_dir: DataDir = None) -> Path:
    """`<data_dir>/lake` of a local store (UnsupportedLocationError on S3)."""
    return local_path(data_location(data_dir)) / LAKE


def dataset_prefix(dataset: str) -> str:
    """The key prefix of one dataset: `lake/<dataset>`."""
    return f"{LAKE}/{dataset}"


def default_catalog_for(loc: Location) -> Path:
    """Where the catalog lives when `PROTRADE_CATALOG` is not set: `<data_dir>/protrade.duckdb`
    for a local store; for S3, a local file per bucket and prefix under
    `~/.protrade/catalogs/` (the catalog is always local: DuckDB opens it, then reads S3)."""
    if loc.path is not None:
        return loc.path / CATALOG_FILE
    name = "-".join(p for p in (loc.bucket, *(loc.prefix.split("/") if loc.prefix else [])) if p)
    return Path.home() / ".protrade" / "catalogs" / name / CATALOG_FILE


def catalog_path(data_dir: DataDir = None) -> Path:
    """The views-only DuckDB catalog of `data_dir` (default: the configured store):
    `PROTRADE_CATALOG` when configured for that store, else `default_catalog_for`."""
    loc = data_location(data_dir)
    if _configured_catalog is not None and (data_dir is None or loc == data_location()):
        return _configured_catalog
    return default_catalog_for(loc)


def encode_segment(name: str) -> str:
    """Map an instrument name to exactly one safe path segment (reversible percent-encoding).

    Every byte of the UTF-8 name outside `[A-Za-z0-9_-]` becomes `%XX` (upper-case hex), so `.`,
    `/`, `:`, `=` and `%` are always encoded: no segment can be `..` or contain a separator.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInstrumentName("An instrument name must be a non-empty string.")
    if "\x00" in name:
        raise InvalidInstrumentName("An instrument name must not contain a NUL character.")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInstrumentName(
            f"An instrument name must be at most {MAX_NAME_CHARS} characters, got {len(name)}."
        )
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInstrumentName(
            "An instrument name must be valid Unicode text (it contains a lone surrogate)."
        ) from exc
    segment = "".join(chr(b) if chr(b) in _SAFE else f"%{b:02X}" for b in raw)
    if len(segment) > MAX_SEGMENT_CHARS:
        raise InvalidInstrumentName(
            f"The instrument name {name[:40]!r} is too long once encoded for a path "
            f"({len(segment)} > {MAX_SEGMENT_CHARS} characters)."
        )
    return segment


def decode_segment(seg: str) -> str:
    """The instrument name that `encode_segment` turned into `seg`; refuses any other string."""
    if not isinstance(seg, str) or not _SEGMENT_RE.fullmatch(seg):
        raise InvalidInstrumentName(f"{seg!r} is not an encoded instrument segment.")
    out = bytearray()
    i = 0
    while i < len(seg):
        if seg[i] == "%":
            out.append(int(seg[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(seg[i]))
            i += 1
    try:
        name = out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInstrumentName(f"{seg!r} does not decode to UTF-8 text.") from exc
    # One name, one segment: `%41` for `A` would decode but is not what we would write.
    if encode_segment(name) != seg:
        raise InvalidInstrumentName(f"{seg!r} is not the canonical encoding of {name!r}.")
    return name
