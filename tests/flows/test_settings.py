"""One typed settings object: read once, by one module, and passed down to providers and storage."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.settings import (
    Settings,
    SettingsError,
    env_name,
    load_settings,
    read_settings,
    use_settings,
)
from providers.interfaces import ProviderPlugin
from providers.registry import ProviderRegistry
from providers.settings import ProviderSettings

ROOT = Path(__file__).resolve().parents[2]
#: The one reader of `PROTRADE_*`, and the one place for Prefect's own `PREFECT_*` variables
#: (Prefect and the flow-run processes it starts read those from the environment itself).
#: And the S3 client's module, for the standard `AWS_*` variables only (read where the client is
#: made, as every AWS SDK does; checked below).
ALLOWED = {"flows/settings.py", "flows/prefect_env.py", "storage/lakestore.py"}
ENV_FUNCTIONS = {"environ", "getenv", "putenv", "unsetenv", "environb", "getenvb"}


def _env_uses(path: Path) -> list[str]:
    """Every `os.environ` / `os.getenv` (or `from os import environ`) in a module's code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ENV_FUNCTIONS:
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ENV_FUNCTIONS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from os import")
    return found


def test_only_the_settings_module_reads_the_environment() -> None:
    sources = [p for d in ("providers", "storage", "flows") for p in (ROOT / d).rglob("*.py")]
    offenders = [
        use for p in sources if str(p.relative_to(ROOT)) not in ALLOWED for use in _env_uses(p)
    ]
    assert offenders == []
    # And the Prefect module names no ProTrade variable, the S3 module no variable but AWS_*.
    assert "PROTRADE_" not in (ROOT / "flows/prefect_env.py").read_text()
    lakestore = (ROOT / "storage/lakestore.py").read_text()
    read = set(re.findall(r"env(?:iron)?\.get\(\"([A-Z_]+)\"", lakestore))
    assert read and all(name.startswith("AWS_") for name in read), read


def _readme_configuration() -> dict[str, str]:
    """The README's Configuration table: `PROTRADE_*` variable -> documented default."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(PROTRADE_[A-Z_]+)` \| `([^`]*)` \|", table, re.MULTILINE)
    return dict(rows)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No `PROTRADE_*` variable set: every setting at its default."""
    import os

    for name in [n for n in os.environ if n.startswith("PROTRADE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def _effective(settings: Settings) -> dict[str, Any]:
    """What each setting means: the built-in provider order for an unset order."""
    builtin = {"options": ("nse", "trendlyne"), "historical": ("tradingview",)}
    builtin["live"] = ("tradingview",)
    values = settings.model_dump()
    values["tv_auth_token"] = settings.tv_auth_token.get_secret_value()
    values["holidays_file"] = settings.holidays_path
    values["data_dir"] = settings.data_path
    values["catalog"] = settings.catalog_path
    for kind, order in builtin.items():
        values[f"{kind}_providers"] = values[f"{kind}_providers"] or order
    return values


def test_settings_hold_every_readme_variable_with_its_documented_default(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    documented = _readme_configuration()
    assert set(documented) == {env_name(f) for f in Settings.model_fields}
    clean_env.chdir(tmp_path)  # `./data` resolves against the working directory
    defaults = read_settings()
    for name, default in documented.items():
        clean_env.setenv(name, default.replace("$PROTRADE_DATA_DIR", "./data"))
    assert _effective(read_settings()) == _effective(defaults)


def test_each_variable_is_read_into_its_typed_field(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROTRADE_UNDERLYINGS", " nifty , finnifty ")
    clean_env.setenv("PROTRADE_OPTIONS_PROVIDERS", "trendlyne,nse")
    clean_env.setenv("PROTRADE_JOURNAL_RETENTION_DAYS", "0")
    clean_env.setenv("PROTRADE_NSE_BASE_URL", "http://127.0.0.1:9/")
    settings = read_settings()
    assert settings.underlyings == ("NIFTY", "FINNIFTY")
    assert settings.providers.provider_order("options") == ["trendlyne", "nse"]
    assert settings.providers.provider_order("live") is None
    assert settings.journal_retention_days == 0
    assert settings.providers.nse_base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROTRADE_JOURNAL_RETENTION_DAYS", "abc"),
        ("PROTRADE_JOURNAL_RETENTION_DAYS", "-1"),
        ("PROTRADE_DATA_DIR", "ftp://host/lake"),
        ("PROTRADE_DATA_DIR", "s3:///no-bucket"),
    ],
)
def test_a_bad_value_is_one_clear_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        read_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and "\n" not in message


def test_a_bad_value_stops_a_cli_command_with_one_line_naming_it(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from flows.cli import app

    clean_env.setenv("PROTRADE_JOURNAL_RETENTION_DAYS", "abc")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "PROTRADE_JOURNAL_RETENTION_DAYS='abc'" in lines[0]


def test_the_token_never_shows_in_the_settings_repr(clean_env: pytest.MonkeyPatch) -> None:
    token = "tvtoken-0123456789abcdef"
    clean_env.setenv("PROTRADE_TV_AUTH_TOKEN", token)
    settings = read_settings()
    assert settings.tv_auth_token.get_secret_value() == token
    for shown in (
        repr(settings),
        str(settings),
        repr(settings.providers),
        str(settings.model_dump()),
    ):
        assert token not in shown


def test_use_settings_overrides_the_environment_without_touching_it(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    from storage.paths import data_dir

    clean_env.setenv("PROTRADE_NSE_BASE_URL", "https://from-the-env.test")
    before = dict(os.environ)
    chosen = read_settings(data_dir=str(tmp_path), nse_base_url="http://127.0.0.1:1")
    with use_settings(chosen):
        assert load_settings() is chosen
        assert data_dir() == tmp_path.resolve()
    assert load_settings().nse_base_url == "https://from-the-env.test"
    assert data_dir() != tmp_path.resolve()
    assert dict(os.environ) == before


async def test_a_run_context_carries_its_settings_to_the_registry_and_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import runtime

    built: list[ProviderSettings] = []

    def factory(settings: ProviderSettings) -> ProviderRegistry:
        built.append(settings)
        return ProviderRegistry(settings=settings)

    monkeypatch.setattr(runtime, "registry_factory", factory)
    monkeypatch.setenv("PROTRADE_DATA_DIR", str(tmp_path / "from-the-env"))
    settings = read_settings(data_dir=str(tmp_path / "chosen"), options_providers="trendlyne")
    async with runtime.run_context(settings) as ctx:
        assert ctx.settings is settings
        assert ctx.writer.root == (tmp_path / "chosen" / "lake").resolve()
        assert ctx.registry.settings.provider_order("options") == ["trendlyne"]
    assert built == [settings.providers]


def _options_provider(url: str) -> Any:
    from providers.nse import NseOptionsProvider

    return NseOptionsProvider(url)


def test_the_registry_hands_its_settings_to_factories_that_take_them() -> None:
    settings = ProviderSettings(nse_base_url="http://127.0.0.1:2")
    registry = ProviderRegistry(settings=settings)
    registry.register_plugin(
        ProviderPlugin("with", lambda s: _options_provider(s.nse_base_url), 2, ("options",))
    )
    registry.register_plugin(
        ProviderPlugin("without", lambda: _options_provider("http://127.0.0.1:3"), 1, ("options",))
    )
    by_name = dict(registry.providers("options"))
    assert by_name["with"].base_url == "http://127.0.0.1:2"
    assert by_name["without"].base_url == "http://127.0.0.1:3"
