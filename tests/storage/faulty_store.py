"""A `LakeStore` wrapper that fails (or runs a hook) on chosen calls: how tests inject faults
into the writer, compaction and the journal, on a local folder and on S3 alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from storage.lakestore import LakeStore, ObjectInfo, Payload


@dataclass
class _Rule:
    op: str
    match: Callable[[str], bool]
    action: Callable[[str], None]
    times: int | None  # None: every matching call


class FaultyStore:
    """Delegates to `inner`; `fail(...)`/`before(...)` arm rules on an operation
    (`put_if_absent`, `put`, `get`, `head`, `list`, `delete`) by the key it is called with.
    `calls` records every (operation, key) in order; thread-safe (batches publish in threads).
    """

    def __init__(self, inner: LakeStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    # -- arming

    def fail(
        self,
        op: str,
        error: BaseException,
        *,
        when: Callable[[str], bool] = lambda key: True,
        times: int | None = 1,
    ) -> None:
        """Raise `error` on the next `times` calls of `op` whose key satisfies `when`."""

        def action(key: str) -> None:
            raise error

        self._rules.append(_Rule(op, when, action, times))

    def before(
        self,
        op: str,
        hook: Callable[[str], None],
        *,
        when: Callable[[str], bool] = lambda key: True,
        times: int | None = 1,
    ) -> None:
        """Run `hook(key)` before the next `times` calls of `op` whose key satisfies `when`."""
        self._rules.append(_Rule(op, when, hook, times))

    def _enter(self, op: str, key: str) -> None:
        action = None
        with self._lock:
            self.calls.append((op, key))
            for rule in self._rules:
                if rule.op == op and rule.times != 0 and rule.match(key):
                    if rule.times is not None:
                        rule.times -= 1
                    action = rule.action
                    break
        if action is not None:
            action(key)

    def keys_of(self, op: str) -> list[str]:
        with self._lock:
            return [k for o, k in self.calls if o == op]

    # -- the LakeStore protocol

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def is_local(self) -> bool:
        return self.inner.is_local

    def uri(self, key: str) -> str:
        return self.inner.uri(key)

    def put_if_absent(self, key: str, data: Payload) -> bool:
        self._enter("put_if_absent", key)
        return self.inner.put_if_absent(key, data)

    def put(self, key: str, data: Payload) -> None:
        self._enter("put", key)
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._enter("get", key)
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        self._enter("head", key)
        return self.inner.head(key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        self._enter("list", prefix)
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        for key in batch:
            self._enter("delete", key)
        self.inner.delete(batch)
