"""Provider limits that hold across processes and hosts: Prefect global concurrency limits.

NSE paces per client IP. Workers on several hosts behind one egress IP (NAT, one office line)
are one client to NSE, so their pace must be shared: `PROTRADE_NSE_PACING=cluster` makes every
NSE request of every flow run first take a slot of the global concurrency limit
`NSE_RATE_LIMIT` on the Prefect server. The limit has `NSE_BURST` slots that decay at
`NSE_REQUESTS_PER_SECOND` slots per second, so together they send a burst of 3 after a pause and
then at most 3 requests/s: the same pace one process keeps by itself with aiolimiter
(`providers.http`, where the burst's evidence is cited).

The limit is created (or reset to these values) when deploying (`ensure_nse_rate_limit`,
called by `deployments.cluster.deploy`); a run that finds none proceeds with a warning from
Prefect, unpaced across hosts (`strict=False`): losing the shared pace must not stop ingestion.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from providers.http import DEFAULT_BURST, DEFAULT_MAX_RATE

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger(__name__)

#: The global concurrency limit every NSE request takes a slot of, cluster-wide.
NSE_RATE_LIMIT = "protrade-nse-requests"
#: NSE's courtesy pace for one client (IP): the same 3 requests/s as one process.
NSE_REQUESTS_PER_SECOND = DEFAULT_MAX_RATE
#: Requests the cluster may send back to back after a pause, as one process may.
NSE_BURST = DEFAULT_BURST


class PrefectRateLimiter:
    """A `providers.http.RateLimiter` backed by a Prefect global concurrency limit with slot
    decay: `acquire()` returns once the server grants a slot (waiting while others hold it)."""

    def __init__(self, name: str = NSE_RATE_LIMIT) -> None:
        self.name = name

    async def acquire(self) -> None:
        from prefect.concurrency.asyncio import rate_limit

        await rate_limit(self.name, occupy=1)


async def ensure_nse_rate_limit(client: PrefectClient) -> None:
    """Create the NSE limit on the server, or reset it to our values; safe to call again."""
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists

    try:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name=NSE_RATE_LIMIT,
                limit=NSE_BURST,
                slot_decay_per_second=NSE_REQUESTS_PER_SECOND,
                active=True,
            )
        )
    except ObjectAlreadyExists:
        await client.update_global_concurrency_limit(
            NSE_RATE_LIMIT,
            GlobalConcurrencyLimitUpdate(
                limit=NSE_BURST, slot_decay_per_second=NSE_REQUESTS_PER_SECOND, active=True
            ),
        )
