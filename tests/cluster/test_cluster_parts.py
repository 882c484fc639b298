"""The pieces of running on several hosts, each alone and fast: breaker seeding from recent
attempts, the shared NSE pace, lost-run detection, a slot's identity, and the cluster's settings.
The whole (two workers on one Prefect server) is tests/cluster/test_cluster.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from aiolimiter import AsyncLimiter

from providers.errors import AllProvidersFailedError
from providers.http import HttpSession
from providers.interfaces import IOptionsDataProvider
from providers.records import AttemptRecord
from providers.registry import BreakerPolicy, ProviderRegistry, breaker_seed

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failure_threshold=5, cooldown=60.0)


@dataclass(frozen=True)
class Past:
    ts: datetime
    outcome: str = "error"
    error_class: str | None = "BlockedError"
    error: str | None = "refused with HTTP 403"


def ago(seconds: float, **kw: str | None) -> Past:
    return Past(NOW - timedelta(seconds=seconds), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ breaker seeding decision


def test_five_recent_errors_open_the_breaker_for_the_rest_of_the_cooldown():
    seed = breaker_seed([ago(s) for s in (10, 12, 14, 16, 18)], POLICY, NOW)
    assert seed is not None
    assert seed.open_for == pytest.approx(50.0)  # the newest error was 10 s ago
    assert seed.failures == 5
    assert seed.last_error == "refused with HTTP 403"


def test_fewer_errors_than_the_threshold_leave_it_closed():
    assert breaker_seed([ago(s) for s in (10, 12, 14, 16)], POLICY, NOW) is None


def test_a_success_ends_the_streak_whatever_came_before_it():
    attempts = [ago(1), ago(2), ago(3, outcome="ok", error_class=None), *map(ago, (4, 5, 6, 7))]
    assert breaker_seed(attempts, POLICY, NOW) is None


def test_order_does_not_matter_only_time_does():
    attempts = [ago(s) for s in (18, 10, 16, 12, 14)]
    seed = breaker_seed(attempts, POLICY, NOW)
    assert seed is not None and seed.open_for == pytest.approx(50.0)


def test_neutral_errors_say_nothing_about_health():
    attempts = [ago(s) for s in (10, 12, 14, 16)]
    attempts += [ago(11, error_class="UnknownSymbolError")]
    attempts += [ago(13, error_class="InvalidRequestError")]
    assert breaker_seed(attempts, POLICY, NOW) is None


def test_attempts_skipped_by_an_open_breaker_do_not_end_the_streak():
    attempts = [ago(s) for s in (10, 20, 30)]
    attempts += [ago(25, outcome="skipped", error_class="CircuitOpen"), ago(40), ago(50)]
    seed = breaker_seed(attempts, POLICY, NOW)
    assert seed is not None and seed.failures == 5


def test_a_streak_whose_newest_error_is_a_cooldown_old_has_expired():
    assert breaker_seed([ago(s) for s in (60, 61, 62, 63, 64)], POLICY, NOW) is None
    assert breaker_seed([], POLICY, NOW) is None


class Refusing(IOptionsDataProvider):
    """Would answer; the test checks it is never asked while its seeded breaker is open."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_expiry_dates(self, underlying: str) -> list[date]:
        self.calls += 1
        return [date(2026, 12, 30)]

    async def get_option_chain(self, underlying, expiry=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return []

    async def get_oi_data(self, underlying, expiry, time_str=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return []


async def test_a_seeded_breaker_skips_the_provider_until_its_cooldown_ends():
    clock = [100.0]
    registry = ProviderRegistry(
        clock=lambda: clock[0], breaker_policy=POLICY, wall_clock=lambda: NOW
    )
    provider = Refusing()
    registry.register("nse", provider)
    recent = {"nse": [ago(s) for s in (10, 12, 14, 16, 18)], "unknown": [ago(1)] * 9}

    applied = registry.seed_breakers("options", recent)

    assert set(applied) == {"nse"}  # a provider that is not registered is ignored
    state = registry.breaker_states()["options:nse"]
    assert state.state == "open" and state.probe_in == pytest.approx(50.0)
    with pytest.raises(AllProvidersFailedError) as failed:
        await registry.get_expiry_dates("NIFTY")
    assert provider.calls == 0
    assert [a.outcome for a in failed.value.attempts] == ["skipped"]
    assert "circuit open" in (failed.value.attempts[0].error or "")
    clock[0] += 50.0  # the rest of the cool-down: one probe goes through, and closes it
    assert (await registry.get_expiry_dates("NIFTY")).provider == "nse"
    assert registry.breaker_states()["options:nse"].state == "closed"


def test_runs_seed_their_breakers_from_the_attempts_other_runs_stored(data_dir):
    """flows.runtime.seed_breakers reads `provider_attempts` from the lake: the errors of a run
    on another host open this run's NSE breaker; Trendlyne, which answered, stays closed."""
    from flows.lake_rows import attempt_rows
    from flows.runtime import seed_breakers
    from storage.catalog import ensure_catalog
    from storage.writer import LakeWriter

    now = datetime.now(UTC)
    records = [
        AttemptRecord(
            ts=now - timedelta(seconds=5 + i),
            dataset="option_chain",
            operation="get_option_chain",
            provider="nse",
            outcome="error",
            error_class="BlockedError",
            error="refused with HTTP 403 (bot protection)",
            latency_ms=12.0,
            flow_run_id="run-on-host-b",
        )
        for i in range(5)
    ]
    records.append(
        AttemptRecord(
            ts=now - timedelta(seconds=2),
            dataset="option_chain",
            operation="get_option_chain",
            provider="trendlyne",
            outcome="ok",
            error_class=None,
            error=None,
            latency_ms=30.0,
            flow_run_id="run-on-host-b",
        )
    )
    LakeWriter(data_dir=data_dir).write("provider_attempts", attempt_rows(records))
    ensure_catalog(data_dir)
    registry = ProviderRegistry(breaker_policy=POLICY)
    registry.register("nse", Refusing())
    registry.register("trendlyne", Refusing())

    seeded = seed_breakers(registry, data_dir, now)

    assert set(seeded) == {"options:nse"}
    assert seeded["options:nse"].open_for == pytest.approx(55.0, abs=1.0)
    states = registry.breaker_states()
    assert states["options:nse"].state == "open"
    assert states["options:trendlyne"].state == "closed"


def test_seeding_never_fails_a_run_when_the_lake_cannot_be_read(data_dir, monkeypatch, caplog):
    import flows.runtime

    def unreadable(*_args: object, **_kwargs: object) -> list[object]:
        raise OSError("the store did not answer")

    monkeypatch.setattr(flows.runtime, "attempts_since", unreadable)
    registry = ProviderRegistry(breaker_policy=POLICY)
    registry.register("nse", Refusing())
    assert flows.runtime.seed_breakers(registry, data_dir) == {}
    assert registry.breaker_states()["options:nse"].state == "closed"
    assert "breakers start closed: the store did not answer" in caplog.text


# ------------------------------------------------------------------ shared NSE pacing


class CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


async def test_an_injected_limiter_paces_every_request_of_a_session():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    session = HttpSession(provider="nse", base_url="https://nse.test", transport=transport)
    shared = CountingLimiter()
    session.use_limiter(shared)
    for _ in range(3):
        await session.request("GET", "/api/x")
    assert shared.acquired == 3
    await session.aclose()


def test_cluster_pacing_gives_nse_the_prefect_limit_and_process_pacing_its_own():
    from flows.runtime import default_registry, share_provider_limits
    from flows.settings import read_settings
    from flows.shared_limits import NSE_RATE_LIMIT, PrefectRateLimiter

    for pacing, expected in (("cluster", PrefectRateLimiter), ("process", type(None))):
        settings = read_settings(nse_pacing=pacing)
        registry = default_registry(settings.providers)
        share_provider_limits(registry, settings)
        providers = dict(registry.providers("options"))
        limiter = providers["nse"]._session._limiter
        assert isinstance(limiter, expected), pacing
        if isinstance(limiter, PrefectRateLimiter):
            assert limiter.name == NSE_RATE_LIMIT
        # Trendlyne paces per its own host, never through NSE's limit.
        assert not isinstance(providers["trendlyne"]._session._limiter, PrefectRateLimiter)


def test_process_pacing_stays_the_aiolimiter_default():
    from providers.http import default_limiter

    assert isinstance(default_limiter(), AsyncLimiter)


def test_the_cluster_settings_refuse_what_they_cannot_use(monkeypatch):
    from flows.settings import SettingsError, read_settings

    monkeypatch.setenv("PROTRADE_NSE_PACING", "Cluster")
    monkeypatch.setenv("PROTRADE_SNAPSHOT_CHUNK_SIZE", " 4 ")
    settings = read_settings()
    assert (settings.nse_pacing, settings.snapshot_chunk_size) == ("cluster", 4)
    monkeypatch.setenv("PROTRADE_NSE_PACING", "global")
    with pytest.raises(SettingsError, match="PROTRADE_NSE_PACING='global'"):
        read_settings()
    monkeypatch.setenv("PROTRADE_NSE_PACING", "")
    monkeypatch.setenv("PROTRADE_SNAPSHOT_CHUNK_SIZE", "0")
    with pytest.raises(SettingsError, match="PROTRADE_SNAPSHOT_CHUNK_SIZE='0'"):
        read_settings()
    monkeypatch.delenv("PROTRADE_SNAPSHOT_CHUNK_SIZE")
    assert (read_settings().nse_pacing, read_settings().snapshot_chunk_size) == ("process", 10)


# ------------------------------------------------------------------ lost runs


def test_a_running_run_silent_for_two_and_a_half_heartbeats_is_lost():
    from flows.requeue import is_lost, stale_after

    silence = stale_after(30)
    assert silence == timedelta(seconds=75)
    assert stale_after(None) == stale_after(5) == silence  # Prefect's floor is 30 s
    started = NOW - timedelta(minutes=10)
    beat = NOW - timedelta(seconds=74)
    assert not is_lost("RUNNING", started, beat, NOW, silence, heartbeats=True)
    assert is_lost("RUNNING", started, beat - timedelta(seconds=2), NOW, silence, heartbeats=True)
    # No heartbeat yet: the state change is the last sign of life.
    assert not is_lost("RUNNING", NOW - timedelta(seconds=20), None, NOW, silence, heartbeats=True)
    assert is_lost("RUNNING", started, None, NOW, silence, heartbeats=True)
    # Without heartbeats a long healthy run looks as silent as a dead one: never re-queued.
    assert not is_lost("RUNNING", started, None, NOW, silence, heartbeats=False)
    # A run stuck PENDING (its worker died before starting it) needs no heartbeats.
    assert is_lost("PENDING", started, None, NOW, silence, heartbeats=False)
    assert not is_lost("COMPLETED", started, None, NOW, silence, heartbeats=True)


# ------------------------------------------------------------------ a slot's identity


def test_a_slot_comes_from_the_parameter_else_the_scheduled_start():
    from flows.snapshot import RunOrigin, slot_of

    scheduled = RunOrigin(scheduled_start=datetime(2026, 12, 2, 9, 15, 0, tzinfo=UTC))
    explicit = datetime(2026, 12, 2, 9, 18, 0)  # naive: UTC
    assert slot_of(None, RunOrigin()) is None  # the CLI: no slot
    assert slot_of(None, scheduled) == datetime(2026, 12, 2, 9, 15, tzinfo=UTC)
    assert slot_of(explicit, scheduled) == datetime(2026, 12, 2, 9, 18, tzinfo=UTC)


def test_one_key_per_slot_and_underlying_and_chunks_in_order():
    from flows.snapshot import chunks, idempotency_key

    slot = datetime(2026, 12, 2, 3, 45, tzinfo=UTC)
    key = idempotency_key(slot, "NIFTY")
    assert key == idempotency_key(slot.astimezone(UTC), "NIFTY")
    assert key != idempotency_key(slot, "BANKNIFTY")
    assert key != idempotency_key(slot + timedelta(minutes=3), "NIFTY")
    assert chunks(["A", "B", "C", "D", "E"], 2) == [["A", "B"], ["C", "D"], ["E"]]
    assert chunks(["A"], 10) == [["A"]]


def test_the_first_interval_slot_is_a_whole_multiple_after_the_lead():
    from deployments.cluster.deploy import next_slot

    now = datetime(2026, 12, 2, 5, 0, 7, 500000, tzinfo=UTC)
    assert next_slot(timedelta(seconds=20), timedelta(seconds=5), now) == datetime(
        2026, 12, 2, 5, 0, 20, tzinfo=UTC
    )
    assert next_slot(timedelta(seconds=20), timedelta(seconds=15), now) == datetime(
        2026, 12, 2, 5, 0, 40, tzinfo=UTC
    )
