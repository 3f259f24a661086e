"""The lofibeats live server: a Starlette app on uvicorn (`python live.py`, conf/live.yaml).

Routes: `/` the page, `/static/*` its scripts (the AudioWorklet module among them),
`/api/checkpoints` the runs a listener can pick, `/api/upload` a clip as a style target,
`/api/status`, and `/ws`, one WebSocket per listener (the protocol is in `protocol`).

A listener takes one of `live.max_streams` slots when it presses play (its own worker thread,
see `player`) and frees it the moment its socket closes. The server listens on localhost
unless `live.host` says otherwise, and then every request needs the access token (`?token=`
once, a cookie after that). On localhost it still refuses other Host names (DNS rebinding)
and WebSockets opened by other sites (their Origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import torch
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from lofibeats.errors import ConfigError, LofiError
from lofibeats.live.catalog import (
    CheckpointInfo,
    LoadedModel,
    ModelCache,
    Uploads,
    describe_checkpoint,
    scan_checkpoints,
)
from lofibeats.live.player import OutFrame, Player, PlayerSettings, TakeCounter, warm_up
from lofibeats.live.protocol import (
    VERSION,
    ProtocolError,
    check_knobs,
    check_played,
    check_tag,
    parse_message,
)
from lofibeats.models.sampling import needs_lookback

STATIC = Path(__file__).parent / "static"
COOKIE = "lofibeats_live_token"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
CLOSE_BUSY = 1013  # "try again later"
CLOSE_POLICY = 1008


@dataclass(frozen=True)
class LiveSettings:
    """The server's settings (conf/live.yaml `live.*` plus the inference keys)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_streams: int = 4
    start_seconds: float = 0.3
    idle_timeout: float = 120.0
    send_timeout: float = 10.0
    stats_interval: float = 0.5
    max_message_bytes: int = 4096
    max_upload_bytes: int = 20 * 2**20
    max_uploads: int = 16
    max_models: int = 2
    history_seconds: float = 60.0
    outputs_dir: Path = Path("outputs")
    default_ckpt: Path | None = None
    device: str = "cpu"
    player: PlayerSettings = field(default_factory=PlayerSettings)
    knobs: Mapping[str, Any] = field(default_factory=dict)  # the knobs a take starts with

    @property
    def local(self) -> bool:
        """Whether the server only listens on this machine."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LiveState:
    """What the app shares between requests: settings, models, uploads and the listeners."""

    def __init__(self, settings: LiveSettings, shelf: Path) -> None:
        self.settings = settings
        self.models = ModelCache(
            shelf / "models", torch.device(settings.device), settings.max_models
        )
        self.uploads = Uploads(shelf / "uploads", settings.max_uploads)
        self.takes = TakeCounter(settings.player.seed)
        self.sessions: dict[int, Session] = {}
        self.lock = threading.Lock()
        self._ids = iter(range(1, 2**62))

    def catalog(self) -> dict[str, CheckpointInfo]:
        extra = [self.settings.default_ckpt] if self.settings.default_ckpt else []
        return scan_checkpoints(self.settings.outputs_dir, extra)

    def default_id(self, catalog: Mapping[str, CheckpointInfo]) -> str | None:
        if self.settings.default_ckpt is not None:
            want = self.settings.default_ckpt.absolute()
            for info in catalog.values():
                if info.path == want:
                    return info.id
        return next(iter(catalog), None)

    def preload(self) -> tuple[LoadedModel, str]:
        """Load the starting checkpoint and decode a block with it (the first listener then
        waits for neither); the model and its engine's name. A `loop` it cannot take is a
        ConfigError, as generate.py says."""
        if self.settings.default_ckpt is None:
            raise ConfigError("no starting checkpoint: give ckpt=<path> or ckpt=last")
        info = describe_checkpoint(self.settings.default_ckpt, self.settings.outputs_dir)
        model = self.models.get(info)
        loop = self.settings.knobs.get("loop", 0.0)
        if needs_lookback(loop) and not model.lookback:
            raise ConfigError(
                f"loop={loop:g}: {info.name} has no lookback to loop (train one with "
                "model.lookback, e.g. experiment=music_16k); use loop=0"
            )
        return model, warm_up(model, self.settings.player)

    def acquire(self, session: Session) -> bool:
        """Take a stream slot for `session`; False when all `max_streams` are taken."""
        with self.lock:
            if len(self.sessions) >= self.settings.max_streams:
                return False
            self.sessions[session.id] = session
            return True

    def release(self, session: Session) -> None:
        with self.lock:
            self.sessions.pop(session.id, None)

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    def stop_all(self) -> None:
        with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            if session.player is not None:
                session.player.stop()


class Session:
    """One listener's WebSocket: routes control messages to its `Player`, sends its frames,
    messages and stats, and frees everything when the socket closes."""

    def __init__(self, live: LiveState, websocket: WebSocket) -> None:
        self.live, self.websocket = live, websocket
        self.settings = live.settings
        self.id = live.next_id()
        self.player: Player | None = None
        self.pending_knobs: dict[str, Any] = {}
        self.outbox: asyncio.Queue[OutFrame | dict[str, Any] | None] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.closing = False

    # --------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        await self.websocket.accept()
        await self.send_json(self.hello())
        sender = asyncio.create_task(self._sender())
        receiver = asyncio.create_task(self._receiver())
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            await self.close()

    async def close(self) -> None:
        """Free the slot now; the worker finishes the frame it is making and ends."""
        self.live.release(self)
        player, self.player = self.player, None
        if player is not None:
            player.stop()

    def hello(self) -> dict[str, Any]:
        s = self.settings
        return {
            "type": "hello",
            "version": VERSION,
            "ahead_seconds": s.player.ahead_seconds,
            "start_seconds": s.start_seconds,
            "knob_lead_seconds": s.player.knob_lead_seconds,
            "history_seconds": s.history_seconds,
            "max_message_bytes": s.max_message_bytes,
            "max_upload_bytes": s.max_upload_bytes,
            "max_streams": s.max_streams,
            "idle_timeout": s.idle_timeout,
        }

    # --------------------------------------------------------------- sending
    def emit(self, item: OutFrame | dict[str, Any] | None) -> None:
        """From the worker thread: queue `item` for the sender."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: the server is stopping
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self._send(self.websocket.send_text(json.dumps(message)))

    async def _send(self, sending: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(sending, self.settings.send_timeout)
        except asyncio.TimeoutError:
            raise ClientStalled() from None

    async def _sender(self) -> None:
        next_stats = time.perf_counter() + self.settings.stats_interval
        try:
            while True:
                timeout = max(0.0, next_stats - time.perf_counter())
                try:
                    item = await asyncio.wait_for(self.outbox.get(), timeout)
                except asyncio.TimeoutError:
                    item = None
                if isinstance(item, OutFrame):
                    await self._send(self.websocket.send_bytes(item.data))
                    if self.player is not None:
                        self.player.sent(item.take, item.end)
                elif isinstance(item, dict):
                    await self.send_json(item)
                    if item.get("fatal"):  # the worker died: free the slot, say so
                        await self._close_with(item["message"], 1011)
                        return
                if time.perf_counter() >= next_stats:
                    next_stats = time.perf_counter() + self.settings.stats_interval
                    stats = self.player.stats() if self.player is not None else None
                    if stats is not None:
                        await self.send_json(stats)
        except ClientStalled:
            await self._close_with(
                f"the browser did not read for {self.settings.send_timeout:g} s: closed its "
                "stream to free the slot",
                CLOSE_POLICY,
            )

    # --------------------------------------------------------------- receiving
    async def _receiver(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(
                    self.websocket.receive(), self.settings.idle_timeout
                )
            except asyncio.TimeoutError:
                await self._close_with(
                    f"no message from the page for {self.settings.idle_timeout:g} s: closed "
                    "its stream to free the slot (press play to start again)",
                    1000,
                )
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                parsed = parse_message(message.get("text"), self.settings.max_message_bytes)
                await self._handle(parsed)
            except ProtocolError as exc:  # the sender is the socket's one writer
                self.outbox.put_nowait({"type": "error", "message": str(exc), "key": exc.key})
            if self.closing:
                return

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "start":
            await self._start(message)
        elif kind == "set":
            knobs, tag = check_knobs(message, allow=("id",)), check_tag(message.get("id"))
            if self.player is None:
                self.pending_knobs.update(knobs)
            else:
                self.player.command("knobs", (knobs, tag))
        elif kind == "new_take":
            if self.player is None:
                raise ProtocolError("new_take: nothing is playing yet: send start first")
            self.player.command("new_take")
        elif kind == "played":
            if self.player is not None:
                self.player.played(*check_played(message))
        elif kind in ("pause", "resume"):
            if self.player is not None:
                self.player.pause(kind == "pause")
        elif kind == "ping":
            self.outbox.put_nowait({"type": "pong"})

    async def _start(self, message: dict[str, Any]) -> None:
        knobs = check_knobs(message, allow=("checkpoint",))
        catalog = await asyncio.to_thread(self.live.catalog)
        wanted = message.get("checkpoint") or self.live.default_id(catalog)
        info = catalog.get(wanted) if isinstance(wanted, str) else None
        if info is None:
            if wanted is None:
                raise ProtocolError(
                    "no checkpoint under outputs/: train one first (python train.py)"
                )
            raise ProtocolError(
                f"checkpoint={str(wanted)[:200]!r}: not a run under outputs/: pick one from the "
                "list (GET /api/checkpoints)",
                key="checkpoint",
            )
        if self.player is None:
            if not self.live.acquire(self):
                n = self.settings.max_streams
                await self._close_with(
                    f"busy: all {n} stream{'s' if n != 1 else ''} of this server are playing "
                    f"(live.max_streams={n}); try again when a listener leaves",
                    CLOSE_BUSY,
                    kind="busy",
                )
                return
            self.player = Player(
                self.settings.player,
                self.live.models,
                self.live.uploads,
                self.live.takes,
                self.emit,
                name=str(self.id),
            )
            self.player.start()
        knobs = {**self.settings.knobs, **self.pending_knobs, **knobs}
        self.pending_knobs = {}
        self.player.command("take", (info, knobs))

    async def _close_with(self, message: str, code: int, kind: str = "closing") -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.websocket.send_text(json.dumps({"type": kind, "message": message})), 1.0
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code, reason=message[:120]), 1.0)


class ClientStalled(Exception):
    """A send to the browser did not finish within `live.send_timeout`."""


# ------------------------------------------------------------------- the guard
class Guard:
    """ASGI middleware: Host and Origin checks, and the access token when one is set.

    On localhost only local Host names are served (a DNS-rebinding page cannot reach the
    server), and a WebSocket or an upload must come from this server's own page (its Origin),
    not from another site open in the same browser. With a token every request carries it, as
    `?token=` or in the cookie the page sets.
    """

    def __init__(
        self, app: Callable, *, token: str | None, local: bool, hosts: tuple[str, ...] = ()
    ):
        self.app, self.token, self.local = app, token, local
        self.hosts = set(LOCAL_NAMES) | set(hosts)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        problem = None
        if self.local and _hostname(host) not in self.hosts:
            problem = f"this server answers on localhost only, not as {host!r}"
        origin = headers.get("origin")
        cross_site = origin and urlsplit(origin).netloc.lower() != host.lower()
        writes = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD")
        if problem is None and writes and cross_site:  # another site's page, in this browser
            problem = f"requests from other sites ({origin}) are refused"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = (query.get("token") or [None])[0]
        if problem is None and self.token:
            cookie = _cookie(headers.get("cookie", ""), COOKIE)
            good = any(
                t is not None and secrets.compare_digest(t.encode(), self.token.encode())
                for t in (given, cookie)
            )
            if not good:
                problem = (
                    "this server needs its access token: open the address live.py printed "
                    "(it ends in ?token=...)"
                )
        if problem is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": problem})
                return
            await PlainTextResponse(problem, status_code=403)(scope, receive, send)
            return
        if self.token and given and scope["type"] == "http" and scope["path"] == "/":
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


# ------------------------------------------------------------------- the app
def create_app(settings: LiveSettings, shelf: Path, hosts: tuple[str, ...] = ()) -> Starlette:
    """The ASGI app; `shelf` is a folder for uploads and clip files (the caller owns it)."""
    live = LiveState(settings, shelf)

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def checkpoints(request: Request) -> JSONResponse:
        catalog = await asyncio.to_thread(live.catalog)
        return JSONResponse(
            {
                "checkpoints": [info.to_json() for info in catalog.values()],
                "default": live.default_id(catalog),
            }
        )

    async def status(request: Request) -> JSONResponse:
        with live.lock:
            streams = len(live.sessions)
        return JSONResponse(
            {"version": VERSION, "streams": streams, "max_streams": settings.max_streams}
        )

    async def upload(request: Request) -> JSONResponse:
        name = request.query_params.get("name") or "clip"
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _too_big(name, limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _too_big(name, limit)
            chunks.append(chunk)
        try:
            clip = await asyncio.to_thread(live.uploads.add, b"".join(chunks), name)
        except LofiError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(
            {"id": f"upload:{clip.id}", "name": clip.name, "seconds": round(clip.seconds, 2)}
        )

    async def websocket_endpoint(websocket: WebSocket) -> None:
        session = Session(live, websocket)
        with contextlib.suppress(WebSocketDisconnect):
            await session.run()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        live.stop_all()

    app = Starlette(
        middleware=[Middleware(Guard, token=settings.token, local=settings.local, hosts=hosts)],
        routes=[
            Route("/", index),
            Route("/api/checkpoints", checkpoints),
            Route("/api/status", status),
            Route("/api/upload", upload, methods=["POST"]),
            WebSocketRoute("/ws", websocket_endpoint),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.live = live
    return app


def _too_big(name: str, limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"upload {name!r}: over the {limit / 2**20:g} MiB limit (live.max_upload_mb)"},
        status_code=413,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port) (port 0: any free port); ConfigError when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"live.host={host} live.port={port}: cannot listen there ({exc.strerror or exc}): "
            "give another live.port (0 = any free port)"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def new_shelf() -> tempfile.TemporaryDirectory:
    """A private folder for uploads and clip files, removed when the server stops."""
    return tempfile.TemporaryDirectory(prefix="lofibeats-live-")
