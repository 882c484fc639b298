"""Where the store lives, and how instrument names become safe path segments."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.errors import InvalidInstrumentName, UnsupportedLocationError

DATA_DIR_ENV = "PROTRADE_DATA_DIR"
DEFAULT_DATA_DIR = "./data"
CATALOG_FILE = "protrade.duckdb"

#: Longest instrument name accepted, in characters.
MAX_NAME_CHARS = 200
#: Longest encoded segment: leaves room for `underlying=` under the usual 255-byte name limit.
MAX_SEGMENT_CHARS = 240

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SEGMENT_RE = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+")


#: The store of this process: set by the flows' settings (`PROTRADE_DATA_DIR`, read there once
#: per run or command); None until then, meaning `DEFAULT_DATA_DIR`. Storage never reads the
#: environment: a caller that knows its store passes `data_dir=` and skips this altogether.
_configured: Path | None = None


def configure_data_dir(location: Path | str | None) -> Path | None:
    """Make `location` (a path or a `file://` URI; None: the default) the store that calls
    without `data_dir=` use. Returns the previous setting, for a caller that restores it."""
    global _configured
    previous = _configured
    _configured = None if location is None else resolve_location(location)
    return previous


def data_dir() -> Path:
    """The configured store (`configure_data_dir`), else `./data`, as an absolute path."""
    return _configured if _configured is not None else resolve_location(DEFAULT_DATA_DIR)


def resolve_location(location: Path | str) -> Path:
    """A store location (a path or a `file://` URI) as an absolute path.

    The setting is URI-shaped so that a shared or object store can follow; until the writer
    and views speak one, any other scheme is refused clearly rather than taken for a relative
    folder named `s3:`.
    """
    return Path(_path_of(str(location) or DEFAULT_DATA_DIR)).expanduser().resolve()


def _path_of(location: str) -> str:
    parsed = urlsplit(location)
    if parsed.scheme in ("", "file") or re.fullmatch(r"[A-Za-z]", parsed.scheme):
        # "file:///srv/lake" -> "/srv/lake"; a bare path (or a Windows drive) stays as it is.
        return unquote(parsed.path) if parsed.scheme == "file" else location
    raise UnsupportedLocationError(
        f"{DATA_DIR_ENV}={location!r}: only local paths and file:// URIs are supported "
        f"(not {parsed.scheme}://)"
    )


def _resolve(root: Path | str | None) -> Path:
    return data_dir() if root is None else Path(root).expanduser().resolve()


def lake_root(data_dir: Path | str | None = None) -> Path:
    """`<data_dir>/lake`: one folder per dataset below it."""
    return _resolve(data_dir) / "lake"


def catalog_path(data_dir: Path | str | None = None) -> Path:
    """`<data_dir>/protrade.duckdb`: the views-only DuckDB catalog."""
    return _resolve(data_dir) / CATALOG_FILE


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
