"""NSE India option chains: `query` (request building), `parse` (pure), `provider` (I/O)."""

from providers.nse.provider import NseOptionsProvider

__all__ = ["NseOptionsProvider"]
