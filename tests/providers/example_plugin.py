"""Installs the example plugin (tests/plugins/protrade_example_provider) for one test.

Laid out the way pip installs a wheel: the import package next to a `.dist-info` whose
`entry_points.txt` comes from the plugin's own pyproject.toml, in a temporary site directory
put on `sys.path` for the test only. Not `pip install`: this venv has no `wheel` package, so
any offline build fails, and build isolation would download setuptools. Nothing in the venv
changes, so a killed test leaves no plugin behind for later runs.
"""

from __future__ import annotations

import configparser
import shutil
import sys
import tomllib
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "protrade_example_provider"
PACKAGE = "protrade_example_provider"


def install_example_plugin(site: Path) -> Path:
    """Install the plugin into `site` (created); returns its `.dist-info` directory."""
    project = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())["project"]
    site.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PLUGIN_DIR / "src" / PACKAGE, site / PACKAGE)
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = configparser.ConfigParser()
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]  # keep case
    for group, entries in project["entry-points"].items():
        entry_points[group] = entries
    with (dist / "entry_points.txt").open("w") as out:
        entry_points.write(out)
    (dist / "top_level.txt").write_text(f"{PACKAGE}\n")
    (dist / "INSTALLER").write_text("protrade-tests\n")
    return dist


def forget_example_plugin() -> None:
    """Drop the plugin's modules, so no later test can reach them once it is uninstalled."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
