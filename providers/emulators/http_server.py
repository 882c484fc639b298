"""Run an emulator's ASGI app on 127.0.0.1 (ephemeral port) in a background thread.

Also the machinery the HTTP emulators share: fault injection (settable in-process or through
`POST /__emulator/faults`), a request log (headers without cookies) and body encoding by
`Accept-Encoding` (brotli preferred, like nseindia.com).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import brotli
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FaultKind = Literal[
    "timeout", "status", "rate_limit", "block", "empty", "truncated", "schema", "slow"
]
FAULT_KINDS: tuple[str, ...] = (
    "timeout",
    "status",
    "rate_limit",
    "block",
    "empty",
    "truncated",
    "schema",
    "slow",
)
ALL_ENDPOINTS = "*"
CONTROL_PREFIX = "/__emulator"

ACCESS_DENIED_HTML = (
    "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n"
    "You don't have permission to access this resource on this server.<P>\n"
    "Reference&#32;&#35;18&#46;emulator</BODY>\n</HTML>\n"
)


@dataclass
class Fault:
    """One injected failure; `times=None` keeps it until cleared."""

    kind: FaultKind
    endpoint: str = ALL_ENDPOINTS
    times: int | None = None
    seconds: float | None = None  # timeout / slow delay
    status: int = 503  # kind="status"
    retry_after: str = "1"  # kind="rate_limit": seconds or an HTTP date
    key: str | None = None  # kind="schema": the key to rename (emulator default otherwise)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for always)")


class FaultController:
    """Thread-safe fault table: the test thread sets faults, the server thread takes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def set(self, fault: Fault) -> Fault:
        with self._lock:
            # One fault per endpoint: a new one replaces the old.
            self._faults = [f for f in self._faults if f.endpoint != fault.endpoint]
            self._faults.append(fault)
        return fault

    def clear(self, endpoint: str | None = None) -> None:
        with self._lock:
            self._faults = (
                [] if endpoint is None else [f for f in self._faults if f.endpoint != endpoint]
            )

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, endpoint: str) -> Fault | None:
        """The fault for this request (endpoint-specific first), consuming one of its `times`."""
        with self._lock:
            for wanted in (endpoint, ALL_ENDPOINTS):
                for fault in self._faults:
                    if fault.endpoint == wanted:
                        if fault.times is not None:
                            fault.times -= 1
                            if fault.times == 0:
                                self._faults.remove(fault)
                        return fault
        return None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; cookies removed
    endpoint: str
    at: float = field(default_factory=time.monotonic)
    had_cookies: bool = False


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[LoggedRequest] = []

    def add(self, item: LoggedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def items(self, endpoint: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self._items if endpoint is None or r.endpoint == endpoint]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def encode_body(
    request: Request,
    body: bytes,
    media_type: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A response compressed as the client allows: brotli first (as nseindia.com does), gzip."""
    accepted = {
        token.split(";")[0].strip().lower()
        for token in request.headers.get("accept-encoding", "").split(",")
    }
    out_headers = dict(headers or {})
    out_headers["vary"] = "Accept-Encoding"
    if "br" in accepted:
        # Quality 5, as CDNs use on the fly; the default (11) costs ~100 ms per chain.
        body = brotli.compress(body, quality=5)
        out_headers["content-encoding"] = "br"
    elif "gzip" in accepted:
        body = gzip.compress(body)
        out_headers["content-encoding"] = "gzip"
    return Response(body, status_code=status, media_type=media_type, headers=out_headers)


def rename_first_key(payload: Any, key: str) -> bool:
    """Rename the first occurrence of `key` (depth first) to `key + "_v2"`, in place."""
    if isinstance(payload, dict):
        if key in payload:
            payload[key + "_v2"] = payload.pop(key)
            return True
        return any(rename_first_key(value, key) for value in payload.values())
    if isinstance(payload, list):
        return any(rename_first_key(value, key) for value in payload)
    return False


PayloadFactory = Callable[[], Awaitable[tuple[int, Any]]]


class HttpEmulator:
    """Base of the HTTP emulators: faults, request log, control endpoints and a server."""

    #: The key a `schema` fault renames when the fault names none, per endpoint.
    schema_keys: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.faults = FaultController()
        self.log = RequestLog()
        self._stopping = threading.Event()
        self._server: EmulatorServer | None = None
        self.app = Starlette(routes=[*self._control_routes(), *self.routes()])

    # -- subclass hooks -----------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def configure(self, **options: Any) -> None:
        """Emulator-specific switches (`POST /__emulator/config`)."""
        raise ValueError(f"unknown options {sorted(options)}")

    @property
    def path_prefix(self) -> str:
        """The API's path under the server root (Trendlyne's `/phoenix/api`)."""
        return ""

    # -- in-process control ------------------------------------------------------------------
    def set_fault(
        self,
        kind: FaultKind,
        endpoint: str = ALL_ENDPOINTS,
        *,
        times: int | None = None,
        **params: Any,
    ) -> Fault:
        return self.faults.set(Fault(kind=kind, endpoint=endpoint, times=times, **params))

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests(self, endpoint: str | None = None) -> list[LoggedRequest]:
        return self.log.items(endpoint)

    # -- server ------------------------------------------------------------------------------
    def start(self) -> str:
        if self._server is None:
            self._stopping.clear()
            self._server = EmulatorServer(self.app, on_stop=self._stopping.set)
            self._server.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def server_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._server.base_url

    @property
    def base_url(self) -> str:
        """The base URL a provider is configured with (server root + API prefix)."""
        return self.server_url + self.path_prefix

    def __enter__(self) -> HttpEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling helpers ------------------------------------------------------------
    def record(self, request: Request, endpoint: str) -> None:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in ("cookie",)}
        self.log.add(
            LoggedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers=headers,
                endpoint=endpoint,
                had_cookies=bool(request.cookies),
            )
        )

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the server stops (no hanging shutdown)."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.05, remaining))

    async def answer(self, request: Request, endpoint: str, produce: PayloadFactory) -> Response:
        """Apply any fault for `endpoint`, else JSON-encode what `produce` returns."""
        fault = self.faults.take(endpoint)
        if fault is not None:
            early = await self._fault_response(request, fault)
            if early is not None:
                return early
        status, payload = await produce()
        if fault is not None and fault.kind == "empty" and status == 200:
            payload = {}
        if fault is not None and fault.kind == "schema":
            key = fault.key or self.schema_keys.get(endpoint)
            if key:
                rename_first_key(payload, key)
        body = json.dumps(payload, separators=(",", ":")).encode()
        if fault is not None and fault.kind == "truncated":
            body = body[: max(1, len(body) // 2)]
        return encode_body(request, body, "application/json", status=status)

    async def _fault_response(self, request: Request, fault: Fault) -> Response | None:
        if fault.kind == "timeout":
            await self.sleep(fault.seconds if fault.seconds is not None else 30.0)
            return None
        if fault.kind == "slow":
            await self.sleep(fault.seconds if fault.seconds is not None else 1.0)
            return None
        if fault.kind == "status":
            return encode_body(
                request,
                f"<html><body>Error {fault.status}</body></html>".encode(),
                "text/html",
                status=fault.status,
            )
        if fault.kind == "rate_limit":
            return encode_body(
                request,
                b'{"message":"Too Many Requests"}',
                "application/json",
                status=429,
                headers={"retry-after": fault.retry_after},
            )
        if fault.kind == "block":
            return access_denied(request)
        return None

    # -- control endpoints -------------------------------------------------------------------
    def _control_routes(self) -> list[Route]:
        async def faults(request: Request) -> Response:
            if request.method == "DELETE":
                self.faults.clear(request.query_params.get("endpoint"))
            elif request.method == "POST":
                try:
                    data = await request.json()
                    items = data.get("faults", [data]) if isinstance(data, dict) else data
                    for item in items:
                        self.faults.set(Fault(**item))
                except (ValueError, TypeError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"faults": [asdict(f) for f in self.faults.active()]})

        async def requests(request: Request) -> Response:
            if request.method == "DELETE":
                self.log.clear()
            return JSONResponse({"requests": [asdict(r) for r in self.log.items()]})

        async def config(request: Request) -> Response:
            try:
                self.configure(**(await request.json()))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"ok": True})

        return [
            Route(f"{CONTROL_PREFIX}/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route(f"{CONTROL_PREFIX}/requests", requests, methods=["GET", "DELETE"]),
            Route(f"{CONTROL_PREFIX}/config", config, methods=["POST"]),
        ]


def access_denied(request: Request) -> Response:
    """Akamai's 403 page, as a blocked client sees it."""
    return encode_body(request, ACCESS_DENIED_HTML.encode(), "text/html", status=403)


class EmulatorServer:
    """uvicorn on 127.0.0.1:<ephemeral> in a daemon thread; `with` or `start()`/`stop()`."""

    def __init__(self, app: Any, *, on_stop: Callable[[], None] | None = None) -> None:
        self.app = app
        self._on_stop = on_stop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._port}"

    def start(self, *, ready_timeout: float = 5.0) -> str:
        # Bind here, so the port is known before the thread runs and nothing can race for it.
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
        # TCP; without it every keep-alive answer waits ~40 ms for Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="error",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            loop="asyncio",
            http="h11",
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="emulator-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator server did not start")
            time.sleep(0.005)
        return self.base_url

    def stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        self._port = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
