"""Deletes with a grace period: superseded lake files go only after every reader is done.

Compaction (and journal retention) never deletes a file outright. It writes a small manifest,
`lake/_pending_deletes/<dataset>/<due>_<digest>.json`, naming the files and when they may go
(a key outside every dataset's glob, so no view reads it). Each compaction run first executes
the manifests whose time has come: delete the files, then the manifest. Both steps are
idempotent, so a crash in between is repaired by the next run. Until then a superseded file
stays readable: a query that listed it before it was superseded (an analyst's long scan, a view
planned a moment ago, a lookup holding a file list) never fails within the grace. The same on a
local folder and on S3. (A query that lists a superseded file only near the end of its grace,
and still runs when it goes, can find it gone: our own query paths retry once on a vanished
file; the grace makes that window a small part of its length.)

A key named in a manifest but written after the manifest (a file of that name written again
after an earlier deletion of it) is not what was superseded, and is left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from storage.lakestore import LakeStore, ObjectInfo
from storage.paths import LAKE

log = logging.getLogger(__name__)

#: How long a superseded file stays readable: far longer than any query over the views takes,
#: short enough that duplicates do not linger. `compact(delete_grace=...)` overrides it.
DEFAULT_DELETE_GRACE = timedelta(minutes=10)
#: The manifests' folder below the lake: outside every dataset (`lake/<dataset>/date=*/…`).
PENDING_DELETES = "_pending_deletes"
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """One manifest: `keys` may be deleted from `due` on."""

    key: str
    due: datetime
    keys: tuple[str, ...]
    #: When the store says the manifest was written (the store's clock, as for the files).
    written: datetime
    #: What superseded the files: the merged file's key, or a reason ("journal retention").
    reason: str = ""


def pending_prefix(dataset: str, lake: str = LAKE) -> str:
    """`lake/_pending_deletes/<dataset>`."""
    return f"{lake}/{PENDING_DELETES}/{dataset}"


def schedule_deletes(
    store: LakeStore,
    dataset: str,
    keys: Iterable[str],
    *,
    due: datetime,
    reason: str,
    lake: str = LAKE,
) -> str:
    """Write the manifest that lets `keys` (files of `dataset`) be deleted from `due` on;
    its key. Writing the same keys again (a racing or repeated run) is harmless."""
    names = sorted(set(keys))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]
    key = f"{pending_prefix(dataset, lake)}/{due.astimezone(UTC).strftime(_STAMP)}_{digest}.json"
    body = {
        "dataset": dataset,
        "due": due.astimezone(UTC).isoformat(),
        "reason": reason,
        "keys": names,
    }
    store.put_if_absent(key, json.dumps(body, indent=1).encode())
    return key


def pending_deletes(store: LakeStore, dataset: str, lake: str = LAKE) -> list[PendingDelete]:
    """Every manifest of `dataset`, oldest due first. One that cannot be read is logged and
    left alone (its files are then simply kept)."""
    found: list[PendingDelete] = []
    for info in store.list(pending_prefix(dataset, lake)):
        if not info.name.endswith(".json"):
            continue
        try:
            body = json.loads(store.get(info.key))
            due = datetime.fromisoformat(body["due"])
            keys = tuple(str(k) for k in body["keys"])
            reason = str(body.get("reason", ""))
        except FileNotFoundError:
            continue  # a concurrent run executed it meanwhile
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable delete manifest %s: %s", info.key, exc)
            continue
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        found.append(PendingDelete(info.key, due, keys, info.modified, reason))
    found.sort(key=lambda p: (p.due, p.key))
    return found


def superseded_keys(manifests: Iterable[PendingDelete]) -> set[str]:
    """Every key some manifest names: superseded, never to be merged again."""
    return {k for m in manifests for k in m.keys}


def run_deletes(
    store: LakeStore,
    manifests: Iterable[PendingDelete],
    objects: MutableMapping[str, ObjectInfo] | Mapping[str, ObjectInfo],
) -> int:
    """Execute `manifests` (their grace has passed): delete their files, then them; the files
    deleted. `objects` is a listing of the dataset (key -> info); deleted keys leave it."""
    deleted = 0
    for manifest in manifests:
        doomed = [
            k
            for k in manifest.keys
            if (info := objects.get(k)) is not None and info.modified <= manifest.written
        ]
        if doomed:
            store.delete(doomed)
            deleted += len(doomed)
            if isinstance(objects, MutableMapping):
                for k in doomed:
                    objects.pop(k, None)
        store.delete([manifest.key])
    return deleted
