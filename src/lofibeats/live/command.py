"""`python live.py`: check the settings, load the starting checkpoint, serve the page."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import uvicorn
from omegaconf import DictConfig
from rich.console import Console

from lofibeats.cli import quiet_third_party
from lofibeats.errors import ConfigError
from lofibeats.generation.fused import weights_choice
from lofibeats.live.player import PlayerSettings
from lofibeats.live.server import LiveSettings, bind, create_app, is_loopback, new_shelf
from lofibeats.models.sampling import AUTO, Sampling, is_auto
from lofibeats.runs import resolve_checkpoint
from lofibeats.validate import choice, number, optional_number

CARRIES = ("auto", "window", "state")
PRIMES = ("val", "none")
WS_MAX_BYTES = 2**20  # the transport's cap on one WebSocket message (the app's is lower)


class _Server(uvicorn.Server):
    """uvicorn's server, remembering a Ctrl-C. uvicorn re-raises the signal after its graceful
    shutdown, but asyncio.run's handler may only see it once the serve task is done, and then
    asyncio.run returns as if nothing happened (exit 0, not Ctrl-C's 130)."""

    interrupted = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.interrupted = self.interrupted or sig == signal.SIGINT
        super().handle_exit(sig, frame)


def settings_from(cfg: DictConfig) -> LiveSettings:
    """LiveSettings from `cfg.live` and the inference keys, every value checked."""
    live = cfg.get("live")
    if live is None:
        raise ConfigError("live: missing from the config (see conf/live.yaml)")
    host = str(live.host)
    token = live.token
    if token is not None:
        token = str(token)
        if len(token) < 8:
            raise ConfigError("live.token: give at least 8 characters (or null)")
    elif not is_loopback(host):
        token = secrets.token_urlsafe(16)
    sampling = Sampling.parse(
        cfg.get("temperature"),
        cfg.get("top_p"),
        cfg.get("decoding"),
        cfg.get("loop"),
        cfg.get("beat_prior"),
    )
    # "auto" stays "auto" until a take knows its model (the player resolves it per take)
    knobs: dict[str, Any] = {
        "temperature": AUTO if is_auto(cfg.get("temperature")) else sampling.temperature,
        "top_p": sampling.top_p,
        "loop": AUTO if is_auto(cfg.get("loop")) else sampling.loop,
        "beat_prior": AUTO if is_auto(cfg.get("beat_prior")) else sampling.beat_prior,
    }
    if cfg.get("creativity") is not None:
        knobs["creativity"] = number(cfg.creativity, "creativity", low=0.0)
    options = cfg.get("options") or {}
    seed = cfg.get("seed")
    player = PlayerSettings(
        ahead_seconds=number(live.ahead_seconds, "live.ahead_seconds", low=0.2, high=30),
        knob_lead_seconds=number(live.knob_lead_seconds, "live.knob_lead_seconds", low=0, high=5),
        frame_ms=number(live.frame_ms, "live.frame_ms", low=1, high=1000),
        carry=choice(cfg.get("carry", "auto"), CARRIES, "carry"),
        prime=choice(str(live.prime).lower(), PRIMES, "live.prime"),
        style_blend_seconds=number(live.style_blend, "live.style_blend", low=0, high=30),
        engine=str(cfg.get("engine") or "auto"),
        weights=weights_choice(cfg.get("weights")),
        crossfade=optional_number(options.get("crossfade"), "options.crossfade", kind=int, low=0),
        fade=str(options.get("fade") or "equal_power"),
        decoding=sampling.decoding,
        seed=None if seed is None else number(seed, "seed", kind=int),
    )
    start = number(live.start_seconds, "live.start_seconds", low=0.02, high=30)
    if start >= player.ahead_seconds:
        raise ConfigError(
            f"live.start_seconds={start:g}: give less than live.ahead_seconds "
            f"({player.ahead_seconds:g}), or the page would wait for audio that never comes"
        )
    return LiveSettings(
        host=host,
        port=number(live.port, "live.port", kind=int, low=0, high=65535),
        token=token,
        max_streams=number(live.max_streams, "live.max_streams", kind=int, low=1),
        start_seconds=start,
        idle_timeout=number(live.idle_timeout, "live.idle_timeout", low=1),
        send_timeout=number(live.send_timeout, "live.send_timeout", low=0.1),
        max_message_bytes=number(
            live.max_message_bytes, "live.max_message_bytes", kind=int, low=256, high=WS_MAX_BYTES
        ),
        max_upload_bytes=round(
            number(live.max_upload_mb, "live.max_upload_mb", low=0, low_open=True) * 2**20
        ),
        max_uploads=number(live.max_uploads, "live.max_uploads", kind=int, low=1),
        max_models=number(live.max_models, "live.max_models", kind=int, low=1),
        history_seconds=number(live.history_seconds, "live.history_seconds", low=1, high=600),
        outputs_dir=Path(str(cfg.paths.root_dir)) / "outputs",
        device=str(cfg.get("device") or "cpu"),
        player=player,
        knobs=knobs,
    )


def live(cfg: DictConfig) -> None:
    """Run `python live.py` until Ctrl-C."""
    quiet_third_party()
    console = Console(stderr=True, soft_wrap=True)
    settings = settings_from(cfg)
    if settings.device == "auto":
        settings = dataclasses.replace(
            settings, device="cuda" if torch.cuda.is_available() else "cpu"
        )
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is visible; use device=cpu")
    threads = cfg.get("threads")
    torch.set_num_threads(1 if threads is None else number(threads, "threads", kind=int, low=1))
    ckpt = resolve_checkpoint(str(cfg.ckpt), settings.outputs_dir)
    settings = dataclasses.replace(settings, default_ckpt=ckpt.absolute())
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    hosts = tuple(str(h) for h in cfg.live.get("allowed_hosts") or ())
    with sock, new_shelf() as shelf:  # the port is freed however live ends
        app = create_app(settings, Path(shelf), hosts=hosts)
        started = time.perf_counter()
        model, engine = app.state.live.preload()  # a CheckpointError stops here, one line
        console.print(
            f"loaded {ckpt} ({model.module.family}, {model.module.sample_rate} Hz, {engine} "
            f"engine) in {time.perf_counter() - started:.1f} s"
        )
        shown = "localhost" if is_loopback(settings.host) else socket.gethostname()
        host = f"[{shown}]" if ":" in shown else shown
        address = f"http://{host}:{port}/" + (f"?token={settings.token}" if settings.token else "")
        where = "on this machine only" if settings.local else "ON THE NETWORK (token required)"
        console.print(f"lofibeats live: {address}  ({where}; Ctrl-C stops)")
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws_max_size=WS_MAX_BYTES,
            ws_ping_interval=20,
            ws_ping_timeout=20,
            timeout_graceful_shutdown=2,
            ws_per_message_deflate=False,  # int16 audio barely compresses; spare the CPU,
        )
        server = _Server(config)
        try:
            asyncio.run(server.serve(sockets=[sock]))
            if server.interrupted:
                raise KeyboardInterrupt
        finally:
            app.state.live.stop_all()
            sock.close()
