"""The one reader of ProTrade's configuration: the README's "Configuration" table, typed.

`load_settings()` reads every `PROTRADE_*` variable once (per flow run, or per CLI command) into
a frozen `Settings`; everything below the flows gets its values from it as arguments:
`Settings.providers` for the provider registry, `Settings.data_root` for storage. No other module
of `providers`, `storage` or `flows` reads the environment for ProTrade's settings
(tests/flows/test_settings.py holds them to that; Prefect's own `PREFECT_*` variables are
`flows.prefect_env`'s).

The demo and `protrade emulators` point the flows at the emulators with `use_settings(...)`
instead of editing the environment: while it is open, `load_settings()` returns that object. It is
process-wide, not a context variable: a Prefect flow called in-process may run its tasks on
worker threads, which must see the same settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from providers.calendar import HOLIDAYS_FILE_NAME, configure_holidays_file
from providers.settings import (
    ANONYMOUS_TV_TOKEN,
    DEFAULT_NSE_BASE_URL,
    DEFAULT_TRENDLYNE_BASE_URL,
    DEFAULT_TV_WS_URL,
    ProviderSettings,
)
from storage.journal import configure_retention_days
from storage.lakestore import Location, parse_location
from storage.paths import (
    DEFAULT_DATA_DIR,
    configure_catalog,
    configure_data_dir,
    default_catalog_for,
    local_path,
)

#: India's 91-day T-bill area, continuously compounded: the default rate of the greeks.
DEFAULT_RISK_FREE_RATE = 0.065
ENV_PREFIX = "PROTRADE_"
DEFAULT_UNDERLYINGS = ("NIFTY", "BANKNIFTY")
DEFAULT_CAPTURE_SYMBOLS = ("NSE:NIFTY", "NSE:BANKNIFTY")
DEFAULT_BACKFILL_SYMBOLS = ("NSE:NIFTY", "NSE:BANKNIFTY")
DEFAULT_JOURNAL_RETENTION_DAYS = 30
DEFAULT_SNAPSHOT_CHUNK_SIZE = 10
DEFAULT_SNAPSHOT_HOSTS = 1
DEFAULT_NEAREST_EXPIRIES = 1
DEFAULT_FAR_EVERY = 10

#: A comma-separated list (`nse,trendlyne`): split by our validators, never parsed as JSON.
CsvList = Annotated[tuple[str, ...], NoDecode]
OptionalCsvList = Annotated[tuple[str, ...] | None, NoDecode]


class SettingsError(ValueError):
    """A `PROTRADE_*` variable holds a value that cannot be used; the message names it."""


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


class Settings(BaseSettings):
    """Every `PROTRADE_*` setting with its README default. Frozen: read once, then passed on."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, env_file=None, extra="ignore"
    )

    #: A path, a `file://` URI or `s3://bucket/prefix`; `location` is it parsed.
    data_dir: str = DEFAULT_DATA_DIR
    #: The analysts' DuckDB catalog, always a local file. None: `<data dir>/protrade.duckdb`
    #: for a local lake, `~/.protrade/catalogs/<bucket>-<prefix>/protrade.duckdb` for one on S3.
    catalog: Path | None = None
    nse_base_url: str = DEFAULT_NSE_BASE_URL
    trendlyne_base_url: str = DEFAULT_TRENDLYNE_BASE_URL
    tv_ws_url: str = DEFAULT_TV_WS_URL
    #: A secret: shown as `**********` in every repr, log line and error.
    tv_auth_token: SecretStr = SecretStr(ANONYMOUS_TV_TOKEN)
    #: None (unset or blank): the providers' built-in priority order.
    options_providers: OptionalCsvList = None
    historical_providers: OptionalCsvList = None
    live_providers: OptionalCsvList = None
    underlyings: CsvList = DEFAULT_UNDERLYINGS
    capture_symbols: CsvList = DEFAULT_CAPTURE_SYMBOLS
    backfill_symbols: CsvList = DEFAULT_BACKFILL_SYMBOLS
    #: 0 turns the raw journal off.
    journal_retention_days: int = DEFAULT_JOURNAL_RETENTION_DAYS
    #: None: `nse_holidays.json` in `local_dir` (`holidays_path`).
    holidays_file: Path | None = None
    #: Annual, continuously compounded: the rate of the computed IV and greeks.
    risk_free_rate: float = DEFAULT_RISK_FREE_RATE
    #: A snapshot run from a work pool with more underlyings than this fans out: one flow run
    #: per chunk of this many, which any worker may take.
    snapshot_chunk_size: int = DEFAULT_SNAPSHOT_CHUNK_SIZE
    #: "process": each process keeps NSE to 3 requests/s; "cluster": every process sharing the
    #: Prefect server does, together (one egress IP), through a global concurrency limit.
    nse_pacing: Literal["process", "cluster"] = "process"
    #: Hosts sharing a slot's snapshot (its fanned-out chunks), each pacing NSE on its own
    #: (own egress IP, `nse_pacing` "process"): the slot planner's budget is this many times
    #: one host's.
    snapshot_hosts: int = DEFAULT_SNAPSHOT_HOSTS
    #: Every slot fetches each underlying's nearest this many expiries; the farther ones are
    #: spread over later slots when the budget is short.
    snapshot_nearest_expiries: int = DEFAULT_NEAREST_EXPIRIES
    #: A farther expiry is fetched at least once every this many slots, budget or not.
    snapshot_far_every: int = DEFAULT_FAR_EVERY

    @field_validator("snapshot_chunk_size", mode="before")
    @classmethod
    def _chunk_size(cls, value: Any) -> Any:
        if _blank(value):
            return DEFAULT_SNAPSHOT_CHUNK_SIZE
        try:
            size = int(str(value).strip())
        except ValueError:
            size = 0
        if size < 1:
            raise ValueError("expected a whole number of underlyings per flow run, >= 1")
        return size

    @field_validator(
        "snapshot_hosts", "snapshot_nearest_expiries", "snapshot_far_every", mode="before"
    )
    @classmethod
    def _positive_count(cls, value: Any, info: ValidationInfo) -> Any:
        defaults = {
            "snapshot_hosts": DEFAULT_SNAPSHOT_HOSTS,
            "snapshot_nearest_expiries": DEFAULT_NEAREST_EXPIRIES,
            "snapshot_far_every": DEFAULT_FAR_EVERY,
        }
        if _blank(value):
            return defaults[info.field_name or ""]
        try:
            count = int(str(value).strip())
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError("expected a whole number >= 1")
        return count

    @field_validator("nse_pacing", mode="before")
    @classmethod
    def _pacing(cls, value: Any) -> Any:
        if _blank(value):
            return "process"
        if str(value).strip().lower() not in ("process", "cluster"):
            raise ValueError("expected 'process' (per process) or 'cluster' (shared by all hosts)")
        return str(value).strip().lower()

    @field_validator("data_dir", mode="after")
    @classmethod
    def _known_location(cls, value: str) -> str:
        value = value.strip() or DEFAULT_DATA_DIR
        parse_location(value)  # refuses ftp:// and friends now, not at the first write
        return value

    @field_validator("nse_base_url", "trendlyne_base_url", mode="after")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("tv_auth_token", mode="before")
    @classmethod
    def _blank_is_anonymous(cls, value: Any) -> Any:
        # An exported but empty token means "no account", as it always has.
        return value or ANONYMOUS_TV_TOKEN

    @field_validator("options_providers", "historical_providers", "live_providers", mode="before")
    @classmethod
    def _order(cls, value: Any) -> Any:
        return _csv(value) or None

    @field_validator("underlyings", mode="before")
    @classmethod
    def _underlyings(cls, value: Any) -> Any:
        return tuple(u.upper() for u in _csv(value)) or DEFAULT_UNDERLYINGS

    @field_validator("capture_symbols", mode="before")
    @classmethod
    def _capture_symbols(cls, value: Any) -> Any:
        return _csv(value) or DEFAULT_CAPTURE_SYMBOLS

    @field_validator("backfill_symbols", mode="before")
    @classmethod
    def _backfill_symbols(cls, value: Any) -> Any:
        return _csv(value) or DEFAULT_BACKFILL_SYMBOLS

    @field_validator("journal_retention_days", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> Any:
        if _blank(value):
            return DEFAULT_JOURNAL_RETENTION_DAYS
        try:
            days = int(str(value).strip())
        except ValueError:
            days = -1
        if days < 0:
            raise ValueError("expected a whole number of days >= 0 (0 turns the journal off)")
        return days

    @field_validator("risk_free_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if _blank(value):
            return DEFAULT_RISK_FREE_RATE
        try:
            rate = float(str(value).strip())
        except ValueError:
            rate = float("nan")
        if not -0.5 < rate < 1.0:  # also refuses nan and inf
            raise ValueError("expected an annual rate as a fraction, e.g. 0.065 for 6.5%")
        return rate

    @field_validator("holidays_file", "catalog", mode="before")
    @classmethod
    def _blank_path(cls, value: Any) -> Any:
        return None if _blank(value) else value

    @property
    def location(self) -> Location:
        """The store: a local folder, or an S3 bucket and prefix."""
        return parse_location(self.data_dir)

    @property
    def data_root(self) -> Path | str:
        """The store as storage's `data_dir=` takes it, local or S3: an absolute path, or
        `s3://bucket/prefix`."""
        loc = self.location
        return loc.path if loc.path is not None else loc.url

    @property
    def data_path(self) -> Path:
        """The store as a local folder, for what needs one; on S3 an UnsupportedLocationError
        naming PROTRADE_DATA_DIR (storage calls take `data_root`, which works on both)."""
        return local_path(self.data_dir)

    @property
    def catalog_path(self) -> Path:
        """`PROTRADE_CATALOG`, else the default place of the store's catalog."""
        explicit = self.catalog
        return explicit.expanduser().resolve() if explicit else default_catalog_for(self.location)

    @property
    def local_dir(self) -> Path:
        """This host's folder for the store's local files (reports, the holiday file): the
        data dir when it is local, else the catalog's folder (a lake on S3 has no folder)."""
        loc = self.location
        return loc.path if loc.path is not None else self.catalog_path.parent

    @property
    def holidays_path(self) -> Path:
        """`PROTRADE_HOLIDAYS_FILE`, else `nse_holidays.json` in `local_dir`."""
        explicit = self.holidays_file
        return explicit.expanduser().resolve() if explicit else self.local_dir / HOLIDAYS_FILE_NAME

    @property
    def providers(self) -> ProviderSettings:
        """What the provider registry and its plugins are built with."""
        return ProviderSettings(
            nse_base_url=self.nse_base_url,
            trendlyne_base_url=self.trendlyne_base_url,
            tv_ws_url=self.tv_ws_url,
            tv_auth_token=self.tv_auth_token,
            options_providers=self.options_providers,
            historical_providers=self.historical_providers,
            live_providers=self.live_providers,
        )


def env_name(field: str) -> str:
    """The environment variable of a `Settings` field (`data_dir` -> `PROTRADE_DATA_DIR`)."""
    return f"{ENV_PREFIX}{field.upper()}"


def _explain(exc: ValidationError) -> SettingsError:
    """One line per bad variable, named as the operator wrote it; never a secret's value."""
    lines = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        shown = "" if field == "tv_auth_token" else f"={error.get('input')!r}"
        reason = str(error["msg"]).removeprefix("Value error, ")
        name = env_name(field)
        lines.append(reason if reason.startswith(name) else f"{name}{shown}: {reason}")
    return SettingsError("; ".join(lines))


_override: Settings | None = None
_override_lock = threading.Lock()


def read_settings(**overrides: Any) -> Settings:
    """Parse the environment now (fields in `overrides` win); a bad value is a `SettingsError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _explain(exc) from None


def load_settings() -> Settings:
    """The settings of this run or command: `use_settings`' object while one is open, else the
    environment, read now. Call once at the start and pass the result on."""
    override = _override
    return override if override is not None else read_settings()


def activate(settings: Settings) -> Callable[[], None]:
    """Point the process-wide defaults below the flows at `settings`: the store that storage
    calls without `data_dir=` use and its catalog file, the journal's retention, and the
    calendar's published-holidays file. Returns what puts the previous ones back."""
    previous_dir = configure_data_dir(settings.data_root)
    previous_catalog = configure_catalog(settings.catalog)
    previous_retention = configure_retention_days(settings.journal_retention_days)
    previous_file = configure_holidays_file(settings.holidays_path)

    def restore() -> None:
        configure_data_dir(previous_dir)
        configure_catalog(previous_catalog)
        configure_retention_days(previous_retention)
        configure_holidays_file(previous_file)

    return restore


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """While open, every `load_settings()` in this process returns `settings` (and it is
    active); the previous state comes back on exit. The environment is never touched."""
    global _override
    with _override_lock:
        previous = _override
        _override = settings
    restore = activate(settings)
    try:
        yield settings
    finally:
        with _override_lock:
            _override = previous
        restore()
