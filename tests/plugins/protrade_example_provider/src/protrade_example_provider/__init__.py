"""An example option-chain provider plugin: the model for adding a provider.

The entry point `example = "protrade_example_provider:plugin"` (this package's pyproject.toml)
is all ProTrade Ingest needs: at start the registry loads `plugin`, builds the provider and
tries it after NSE (100) and before Trendlyne (50). `PROTRADE_OPTIONS_PROVIDERS` orders or
disables it by its name, "example".
"""

from protrade_example_provider.provider import PROVIDER, ExampleOptionsProvider
from providers.interfaces import ProviderPlugin

plugin = ProviderPlugin(
    name=PROVIDER, factory=ExampleOptionsProvider, priority=75, kinds=("options",)
)

__all__ = ["ExampleOptionsProvider", "plugin"]
