"""Pure helpers for reading untrusted JSON payloads: a surprise becomes `SchemaChangedError`
naming the key, never a `KeyError` or `TypeError`. Shared by every JSON provider's parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.errors import SchemaChangedError

_PLACEHOLDERS = ("", "-", "--")


@dataclass(frozen=True, slots=True)
class PayloadReader:
    """Field readers that raise errors labelled with the provider (`label` for people)."""

    label: str
    provider: str

    def schema(self, key: str, detail: str) -> SchemaChangedError:
        return SchemaChangedError(
            f"{self.label} payload {detail} at '{key}'", key=key, provider=self.provider
        )

    def number(self, value: Any, *, key: str) -> float | None:
        """None when absent or a placeholder ("-"); "1,234.5" accepted; a container is an error."""
        if type(value) is float:  # the common case first: parsers call this per figure
            return value
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            text = value.strip().replace(",", "")
            if text in _PLACEHOLDERS:
                return None
            try:
                return float(text)
            except ValueError:
                raise self.schema(key, f"has a non-numeric value {value!r}") from None
        raise self.schema(key, f"has a {type(value).__name__} where a number belongs")

    def require_dict(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.schema(key, "is missing or not an object")
        return value

    def require_list(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.schema(key, "is missing or not a list")
        return value
