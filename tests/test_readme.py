"""Every fenced block of README.md runs as written, or the README says why it cannot run here.

The blocks are read from README.md when the test runs: there is no copy to drift. The convention
(also stated in a comment at the top of the README, for whoever edits it):

- ```` ```sh ```` runs in bash (`-e -o pipefail`: the first failing command fails the block),
  ```` ```python ```` in the venv's python, ```` ```sql ```` in the DuckDB CLI on
  `data/protrade.duckdb`, read-only;
- `<!-- readme-test: skip (reason) -->` on the line right before a fence: not run, and the
  reason (which test covers it instead) is there for the reader of the README source;
- `<!-- readme-test: background (reason) -->` before a `sh` block: started and left running; the
  `export NAME=value` lines it prints apply to every later block (the second shell a newcomer
  pastes them into); stopped with SIGINT after the last block, and it must then exit 0;
- anything else (another language, no language, a marker without a reason) fails the test, so a
  new block cannot go untested without saying so.

The blocks run in order in one scratch directory shaped like a fresh clone after `make demo`:
`.venv` (a link to this venv) and `data/demo` from one real demo run (flows.demo.run_demo, what
`protrade demo` runs). PATH starts with the venv's bin, HOME is the scratch directory's own,
PROTRADE_DATA_DIR is unset (the README's default `data/`), and provider URLs point at a closed
local port until a block's exports say otherwise, so nothing can reach a real site. CLI runs
report to the session's Prefect test server (as they would to a running `protrade serve`)
instead of each starting a temporary one.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV = Path(sys.prefix)
VENV_BIN = VENV / "bin"
BLOCK_TIMEOUT = 120.0
BACKGROUND_READY_TIMEOUT = 30.0
RUNNERS = ("sh", "python", "sql")

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<info>[^\s`]*)")
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>[\w-]+)\s*(?:\((?P<reason>.*)\))?\s*-->$")
_EXPORT = re.compile(r"^export\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\S*)$")


class ConventionError(ValueError):
    """A README block that is neither runnable nor marked with a reason."""


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    info: str  # the fence's language, "" if none
    code: str
    marker: str | None = None  # skip, background, ... (the word after `readme-test:`)
    reason: str | None = None

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.info or 'no language'})"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, each with the marker on the line before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start, fence = i, opening["fence"]
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ConventionError(f"README.md:{start + 1}: a fence that is never closed")
        marker = _MARKER.match(lines[start - 1].strip()) if start else None
        blocks.append(
            Block(
                line=start + 1,
                info=opening["info"],
                code="\n".join(body) + "\n",
                marker=marker["kind"] if marker else None,
                reason=((marker["reason"] or "").strip() or None) if marker else None,
            )
        )
        i += 1
    return blocks


def plan(block: Block) -> str:
    """`run`, `skip` or `background` for a block; ConventionError if it follows no convention."""
    if block.marker is None:
        if block.info in RUNNERS:
            return "run"
        raise ConventionError(
            f"{block.where} would go untested: make it ```sh, ```python or ```sql so it runs, "
            "or put `<!-- readme-test: skip (why, and which test covers it) -->` right before it"
        )
    if block.marker not in ("skip", "background"):
        raise ConventionError(f"{block.where}: unknown marker `readme-test: {block.marker}`")
    if block.reason is None:
        raise ConventionError(f"{block.where}: `readme-test: {block.marker}` needs a (reason)")
    if block.marker == "background" and block.info != "sh":
        raise ConventionError(f"{block.where}: only a sh block can run in the background")
    return block.marker


def command(block: Block) -> list[str]:
    if block.info == "sh":
        return ["bash", "-e", "-o", "pipefail", "-c", block.code]
    if block.info == "python":
        return [str(VENV_BIN / "python"), "-c", block.code]
    if block.info == "sql":
        return [str(VENV_BIN / "duckdb"), "-readonly", "data/protrade.duckdb", "-c", block.code]
    raise ConventionError(f"{block.where}: no runner for this language")


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(block), cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )


@dataclass
class Background:
    """A `background` block: started, its export lines read, stopped with SIGINT at the end."""

    block: Block
    process: subprocess.Popen[str]
    exports: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, block: Block, cwd: Path, env: dict[str, str]) -> Background:
        process = subprocess.Popen(
            command(block),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: SIGINT reaches bash and its child
        )
        started = cls(block, process)
        threading.Thread(target=started._pump, daemon=True).start()
        return started

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for_exports(self) -> dict[str, str]:
        """Ready when it has printed its export lines and then something else (a comment, a
        note): all of them are out by then."""
        deadline = time.monotonic() + BACKGROUND_READY_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.block.where} printed no export lines within "
                    f"{BACKGROUND_READY_TIMEOUT:g} s:\n" + "\n".join(self.output)
                ) from None
            if line is None:
                raise AssertionError(
                    f"{self.block.where} ended before it was ready (exit "
                    f"{self.process.wait()}):\n" + "\n".join(self.output)
                )
            self.output.append(line)
            export = _EXPORT.match(line.strip())
            if export:
                self.exports[export["name"]] = export["value"]
            elif self.exports:
                return self.exports

    def stop(self) -> int:
        """SIGINT, as Ctrl-C; the exit code (SIGKILL and -9 if it does not stop in 20 s)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                return -9
        while (line := self._lines.get(timeout=5)) is not None:
            self.output.append(line)
        return self.process.returncode


# ---------------------------------------------------------------------------- the convention


def test_every_readme_block_is_run_or_says_why_not() -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    kinds = [plan(block) for block in blocks]  # raises for a block with no convention
    ran = {b.info for b, kind in zip(blocks, kinds, strict=True) if kind == "run"}
    assert ran == set(RUNNERS)
    assert "background" in kinds and "skip" in kinds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```\nls\n```\n", "would go untested"),
        ("```bash\nls\n```\n", "would go untested"),
        ("<!-- readme-test: skip -->\n```sh\nls\n```\n", "needs a (reason)"),
        ("<!-- readme-test: skip () -->\n```sh\nls\n```\n", "needs a (reason)"),
        ("<!-- readme-test: maybe (x) -->\n```sh\nls\n```\n", "unknown marker"),
        ("<!-- readme-test: background (x) -->\n```python\npass\n```\n", "only a sh block"),
        # A marker must be on the line right before the fence, not further up.
        ("<!-- readme-test: skip (x) -->\n\n```text\nls\n```\n", "would go untested"),
    ],
)
def test_a_block_without_a_runnable_language_or_a_reasoned_marker_fails(
    text: str, message: str
) -> None:
    (block,) = readme_blocks(text)
    with pytest.raises(ConventionError, match=re.escape(message)):
        plan(block)


def test_a_marked_block_is_skipped_or_backgrounded_with_its_reason() -> None:
    text = (
        "<!-- readme-test: skip (needs a server: test_x.py) -->\n```sh\nmake run\n```\n"
        "<!-- readme-test: background (until Ctrl-C) -->\n```sh\nserve\n```\n"
        "```sql\nselect 1;\n```\n"
    )
    blocks = readme_blocks(text)
    assert [plan(b) for b in blocks] == ["skip", "background", "run"]
    assert [b.line for b in blocks] == [2, 6, 9]
    assert blocks[0].reason == "needs a server: test_x.py" and blocks[1].code == "serve\n"


def test_an_unclosed_fence_fails() -> None:
    with pytest.raises(ConventionError, match="never closed"):
        readme_blocks("```sh\nls\n")


# ---------------------------------------------------------------------------- the runners


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A scratch directory with an empty catalog, and a plain environment."""
    (tmp_path / "data").mkdir()
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path)}
    # Made by the CLI itself: the Python package may write a newer file format than it reads.
    subprocess.run(
        [str(VENV_BIN / "duckdb"), "data/protrade.duckdb", "-c", "SELECT 1"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tmp_path, env


def test_a_sh_block_fails_at_its_first_failing_command(scratch) -> None:
    cwd, env = scratch
    done = run_block(Block(1, "sh", "echo before\nfalse\necho after\n"), cwd, env)
    assert done.returncode != 0
    assert done.stdout == "before\n"
    piped = run_block(Block(1, "sh", "false | cat\n"), cwd, env)
    assert piped.returncode != 0


def test_a_python_block_that_raises_fails(scratch) -> None:
    cwd, env = scratch
    done = run_block(Block(1, "python", "raise ValueError('broken example')\n"), cwd, env)
    assert done.returncode != 0 and "broken example" in done.stderr


def test_a_sql_block_that_errors_fails_and_a_good_one_runs_on_the_catalog(scratch) -> None:
    cwd, env = scratch
    bad = run_block(Block(1, "sql", "SELECT * FROM no_such_view;\n"), cwd, env)
    assert bad.returncode != 0 and "no_such_view" in bad.stderr
    good = run_block(Block(1, "sql", "SELECT 41 + 1 AS answer;\n"), cwd, env)
    assert good.returncode == 0 and "42" in good.stdout


def test_a_background_block_hands_over_its_exports_and_stops_on_sigint(scratch) -> None:
    cwd, env = scratch
    code = (
        "trap 'echo stopped; exit 0' INT\n"
        "echo '# ready soon'\necho export A_URL=http://127.0.0.1:1\necho export B=2\n"
        "echo '# Ctrl-C stops it'\nwhile true; do sleep 0.1; done\n"
    )
    job = Background.start(Block(1, "sh", code), cwd, env)
    try:
        assert job.wait_for_exports() == {"A_URL": "http://127.0.0.1:1", "B": "2"}
    finally:
        code_ = job.stop()
    assert code_ == 0 and job.output[-1] == "stopped"


# ---------------------------------------------------------------------------- the README itself


DEMO_ENV = (
    "PROTRADE_DATA_DIR",
    "PROTRADE_NSE_BASE_URL",
    "PROTRADE_TRENDLYNE_BASE_URL",
    "PROTRADE_TV_WS_URL",
)


@pytest.fixture(scope="module")
def fresh_clone_after_make_demo(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A scratch directory as a fresh clone is after `make demo`: `.venv` and `data/demo`."""
    from flows.demo import run_demo

    root = tmp_path_factory.mktemp("fresh-clone")
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    saved = {name: os.environ.get(name) for name in DEMO_ENV}
    try:  # run_demo points this process at its emulators; put everything back afterwards
        run_demo(root / "data" / "demo", 6.0, say=lambda _line: None, show=lambda *_: None)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield root


def newcomer_environment(root: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    home = root / ".home"
    home.mkdir(exist_ok=True)
    # The sandbox's Prefect and provider settings (closed local ports), nobody's data dir.
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(("PREFECT_", "PROTRADE_")) and name != "PROTRADE_DATA_DIR"
    }
    env.update(
        PATH=f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        HOME=str(home),
        LANG="C.UTF-8",
        TZ="UTC",  # IST in the output then comes from the commands, not from this machine
        DO_NOT_TRACK="1",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    return env


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_every_runnable_readme_block_runs_in_order_without_an_error(
    fresh_clone_after_make_demo: Path,
) -> None:
    root = fresh_clone_after_make_demo
    env = newcomer_environment(root)
    backgrounds: list[Background] = []
    outputs: list[str] = []
    try:
        for block in readme_blocks(README.read_text(encoding="utf-8")):
            kind = plan(block)
            if kind == "background":
                job = Background.start(block, root, env)
                backgrounds.append(job)
                env.update(job.wait_for_exports())
            elif kind == "run":
                done = run_block(block, root, env)
                assert done.returncode == 0, (
                    f"{block.where} failed (exit {done.returncode}):\n{block.code}\n"
                    f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
                )
                outputs.append(done.stdout)
    finally:
        exits = {job.block.where: job.stop() for job in backgrounds}
    assert exits and all(code == 0 for code in exits.values()), (
        exits,
        [job.output for job in backgrounds],
    )
    # What the first ten minutes promise: data from the demo and from the emulators, in IST.
    assert (root / "data" / "demo" / "protrade.duckdb").exists()
    assert (root / "data" / "protrade.duckdb").exists()
    assert any("+05:30" in out for out in outputs)
