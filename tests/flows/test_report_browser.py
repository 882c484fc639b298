"""The report in a real browser: headless Chromium opens the file offline and draws every chart.

`make test` installs Debian's `chromium` first (the Makefile's chromium stamp); without it this
test fails rather than skips, so a CI machine missing it cannot pass silently.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_seed import SEED_DAY, seed_day

from flows.report import CHART_KINDS, build_report

# Chromium's own background traffic (updates, sync, QUIC probes) is switched off: the machine
# has no network, and the page must need none.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Appended to a copy of the page, never to the report itself: after layout, each chart
# records how many of its data marks the browser drew with a non-empty box, and the page how
# many resources it fetched (none: it is self-contained).
PROBE = """
<script>
addEventListener("load", () => {
  for (const fig of document.querySelectorAll("figure.chart")) {
    const drawn = [...fig.querySelectorAll(".mark")].filter((m) => {
      const box = m.getBoundingClientRect();
      return box.width > 0 || box.height > 0;
    });
    fig.setAttribute("data-drawn", String(drawn.length));
  }
  const fetched = performance.getEntriesByType("resource").map((r) => r.name);
  document.body.setAttribute("data-fetched", JSON.stringify(fetched));
});
</script>
"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return path


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM after the page's scripts ran, as headless Chromium serialises it."""
    done = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_headless_chromium_draws_every_chart_offline_and_fetches_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    seed_day(data_dir)
    report = build_report(data_dir, SEED_DAY, ["NIFTY", "BANKNIFTY"]).path
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))

    dom = dump_dom(probed, tmp_path / "profile")

    drawn: dict[tuple[str, str], int] = {}
    for section in re.finditer(r'<section data-underlying="([^"]+)">(.*?)</section>', dom, re.S):
        for fig in re.finditer(
            r'<figure class="chart" data-chart="([^"]+)" data-drawn="(\d+)"', section.group(2)
        ):
            drawn[(section.group(1), fig.group(1))] = int(fig.group(2))
    assert set(drawn) == {(u, k) for u in ("NIFTY", "BANKNIFTY") for k in CHART_KINDS}
    # NIFTY has a whole day: two expiries of 31 strikes x CE/PE bars; 26 snapshots of PCR and
    # spot (a line and a dot each); 25 x 31 heat cells per option type; 26 snapshots of max
    # pain and spot; 75 candles and their volume bars.
    assert drawn[("NIFTY", "oi-by-strike")] == 2 * 31 * 2
    assert drawn[("NIFTY", "pcr-spot")] == 2 * (1 + 26)
    assert drawn[("NIFTY", "oi-change")] == 2 * 25 * 31
    assert drawn[("NIFTY", "max-pain")] == 2 * (1 + 26)
    assert drawn[("NIFTY", "candles")] == 2 * 75
    # BANKNIFTY has nothing that day: every chart says so instead of drawing.
    assert all(drawn[("BANKNIFTY", k)] == 0 for k in CHART_KINDS)
    assert dom.count('<p class="no-data">no data for 2026-11-20</p>') == len(CHART_KINDS)

    fetched = re.search(r'<body data-fetched="([^"]*)"', dom)
    assert fetched is not None, "the probe ran"
    assert json.loads(fetched.group(1).replace("&quot;", '"')) == []
