"""What the providers are configured with: typed values handed in, never read here.

The flows' settings module (`flows.settings`) reads the README's "Configuration" table once per
run and builds a `ProviderSettings`; the registry hands it to the plugin factories that take
one (the built-ins) and orders providers by it. Nothing in `providers` reads the environment,
so a test or the demo points providers at emulators by building a value, not by editing the
process environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

DEFAULT_NSE_BASE_URL = "https://www.nseindia.com"
DEFAULT_TRENDLYNE_BASE_URL = "https://smartoptions.trendlyne.com/phoenix/api"
DEFAULT_TV_WS_URL = "wss://data.tradingview.com/socket.io/websocket"
ANONYMOUS_TV_TOKEN = "unauthorized_user_token"

#: A current desktop browser identity; NSE's bot protection rejects library defaults.
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
)


_ANONYMOUS = SecretStr(ANONYMOUS_TV_TOKEN)  # immutable, so one shared default is safe


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """The provider-facing settings; the defaults are the real sites and built-in order.

    `tv_auth_token` is a `SecretStr`: its repr (and so this object's) shows `**********`;
    call `.get_secret_value()` only where the token goes on the wire.
    """

    nse_base_url: str = DEFAULT_NSE_BASE_URL
    trendlyne_base_url: str = DEFAULT_TRENDLYNE_BASE_URL
    tv_ws_url: str = DEFAULT_TV_WS_URL
    tv_auth_token: SecretStr = _ANONYMOUS
    #: `PROTRADE_<KIND>_PROVIDERS`: names in the order tried; None keeps the built-in order.
    options_providers: tuple[str, ...] | None = None
    historical_providers: tuple[str, ...] | None = None
    live_providers: tuple[str, ...] | None = None

    def provider_order(self, kind: str) -> list[str] | None:
        """The configured order of `kind`'s providers, or None (priority order)."""
        order: tuple[str, ...] | None = getattr(self, f"{kind}_providers", None)
        return None if order is None else list(order)


#: The defaults: what a registry built without settings uses.
DEFAULT_PROVIDER_SETTINGS = ProviderSettings()
