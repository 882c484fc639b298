"""NSE India option chains: `query` (request building), `parse` (pure), `provider` (I/O)."""

from providers.interfaces import ProviderPlugin
from providers.nse.provider import NseOptionsProvider

#: The `protrade.providers` entry point (pyproject.toml): first choice for option chains.
plugin = ProviderPlugin(name="nse", factory=NseOptionsProvider, priority=100, kinds=("options",))

__all__ = ["NseOptionsProvider", "plugin"]
