"""Reference documents kept per trading day in the data dir: `reference/<kind>/<YYYY-MM-DD>.json`.

Lists that do not change during a session (the F&O underlyings, each underlying's expiries) are
fetched once a day and kept here, so every slot spends its paced requests on chains, every host
of a cluster reads the same list, and the last known list is there when the source is down.
Through the data dir's store (a local folder or S3): each document is written whole, atomically.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from storage.lakestore import LakeStore, LakeStoreError, join_key

REFERENCE = "reference"
_KIND = re.compile(r"^[a-z][a-z0-9_-]*$")
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.json$")


class ReferenceError(LakeStoreError):
    """A reference document cannot be read (not JSON) or written."""


def _key(kind: str, day: date) -> str:
    if not _KIND.match(kind):
        raise ValueError(f"bad reference kind {kind!r}")
    return join_key(REFERENCE, kind, f"{day.isoformat()}.json")


def read_day(store: LakeStore, kind: str, day: date) -> Any | None:
    """The document of `kind` for `day`; None when there is none."""
    key = _key(kind, day)
    try:
        data = store.get(key)
    except FileNotFoundError:
        return None
    return _decode(key, data)


def write_day(store: LakeStore, kind: str, day: date, document: Any) -> None:
    """Store `document` (JSON-serialisable) as `kind`'s document of `day`, replacing any."""
    store.put(_key(kind, day), json.dumps(document, sort_keys=True, indent=1).encode())


def latest_before(store: LakeStore, kind: str, day: date) -> tuple[date, Any] | None:
    """The newest document of `kind` dated before `day`, with its date; None when none is."""
    _key(kind, day)  # validates the kind
    days = []
    for info in store.list(join_key(REFERENCE, kind)):
        match = _DAY_FILE.match(info.name)
        if match and (found := date.fromisoformat(match.group(1))) < day:
            days.append((found, info.key))
    if not days:
        return None
    found, key = max(days)
    return found, _decode(key, store.get(key))


def _decode(key: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ReferenceError(f"{key} is not JSON: {exc}") from exc
