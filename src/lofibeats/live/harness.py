"""Running the live server in-process and driving a headless Chromium at it: what the browser
tests, the soak benchmark and the README screenshot share.

The browser is Debian's `chromium` with its `chromedriver` (never a downloaded one), driven by
Selenium (a dev dependency); `chromium_missing()` says why it cannot run here, for a clean skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from lofibeats.live.server import LiveSettings, LiveState, bind, create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
)


class ServerThread:
    """The live app on uvicorn in a background thread, on a free localhost port; with
    `preload`, the starting checkpoint is loaded and warmed up first, as `live.py` does."""

    def __init__(self, settings: LiveSettings, shelf: Path, preload: bool = False) -> None:
        self.app = create_app(settings, shelf)
        self.preload = preload
        self.sock = bind(settings.host, 0)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            ws_max_size=2**20,
            timeout_graceful_shutdown=2,
            ws_per_message_deflate=False,  # int16 audio barely compresses; spare the CPU
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def live(self) -> LiveState:
        return self.app.state.live

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> ServerThread:
        if self.preload:
            self.live.preload()
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.live.stop_all()
        self.sock.close()


def chromium_missing() -> str | None:
    """Why a headless Chromium cannot be driven here, or None when it can."""
    if not Path(CHROMIUM).exists():
        return f"no {CHROMIUM}: apt-get install chromium chromium-driver (.ci/run does)"
    if not Path(CHROMEDRIVER).exists():
        return f"no {CHROMEDRIVER}: apt-get install chromium-driver (.ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@contextmanager
def chromium(width: int = 1000, height: int = 900) -> Iterator[Any]:
    """A headless Chromium (Selenium WebDriver) with a fresh profile, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a driver
    profile = tempfile.mkdtemp(prefix="lofibeats-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
