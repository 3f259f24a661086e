"""Soak benchmark of lofibeats live: the real server (uvicorn, in this process) streaming a
checkpoint to listeners for minutes, against a bare `Stream.read` of the same model.

    python benchmarks/live_soak.py [--ckpt last|PATH] [--minutes 10] [--streams 1]
        [--carry auto|window|state] [--weights float32|float16] [--browser]
        [--screenshot docs/live.png]

Measured in this one run:

1. Throughput: a bare `Stream.read` loop (the baseline: the model alone) vs the server at full
   speed (a listener that reports everything played the moment it arrives, so pacing never
   holds the worker back); interleaved, best of three each. Their ratio is what serving costs.
2. First audio: from sending `start` to holding `live.start_seconds` of audio (when the page
   starts playing), over fresh connections; median and worst.
3. The soak: `--streams` listeners that play in real time for `--minutes`, each like the page's
   worklet (a ring buffer drained at the sample rate, reporting its position every 50 ms;
   running dry is an underrun, then it waits for `start_seconds` again). Reported: underruns,
   the worker's real-time factor and CPU share of one core (its thread's CPU time over wall
   time, from the server's stats), the process RSS every 5 s (first, last, max, and the slope
   of a straight-line fit after the first minute, MB per minute: flat memory is ~0).

With `--browser` the soak listeners are headless Chromium tabs (Debian's chromium), and the
page's own AudioWorklet counts underruns and first audio; half-way, a key press on the first
tab's temperature slider measures how soon a knob is heard; `--screenshot` saves the first tab.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from websockets.sync.client import connect

from lofibeats.generation.fused import PRECISIONS
from lofibeats.generation.stream import Stream
from lofibeats.live.catalog import LoadedModel, describe_checkpoint
from lofibeats.live.harness import ServerThread, chromium, chromium_missing
from lofibeats.live.player import PlayerSettings, carry_for
from lofibeats.live.protocol import unpack_frame
from lofibeats.live.server import LiveSettings
from lofibeats.models.sampling import Sampling
from lofibeats.runs import resolve_checkpoint

REPORT_SECONDS = 0.05


def rss_mb() -> float:
    """This process's resident memory (Linux /proc; elsewhere the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""


class Client:
    """A listener over a real WebSocket."""

    def __init__(self, server: ServerThread) -> None:
        url = server.url.replace("http://", "ws://") + "ws"
        self._connection = connect(url, proxy=None, compression=None, max_queue=None)
        self.ws = self._connection.__enter__()
        self.hello = self.next_json("hello")
        self.rtf: list[float] = []  # floats only: the soak measures the server's memory
        self.cpu: list[float] = []

    def next_json(self, kind: str) -> dict:
        while True:
            data = self.ws.recv(30)
            if isinstance(data, str) and json.loads(data)["type"] == kind:
                return json.loads(data)

    def send(self, **message) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float):
        """(take, position, samples) of a frame, a dict, or None on timeout."""
        try:
            data = self.ws.recv(timeout)
        except TimeoutError:
            return None
        if isinstance(data, str):
            message = json.loads(data)
            if message["type"] == "stats":
                if message["rtf"] is not None:
                    self.rtf.append(message["rtf"])
                self.cpu.append(message["cpu"])
            elif message["type"] in ("error", "busy", "closing"):
                raise RuntimeError(message["message"])
            return message
        take, _, position, pcm = unpack_frame(data)
        return take, position, len(pcm)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


# ------------------------------------------------------------------ 1. throughput
def thread_cpu(prefixes: tuple[str, ...]) -> float:
    """CPU seconds so far of this process's threads whose names start with `prefixes`."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith(prefixes) and thread.ident is not None:
            with contextlib.suppress(OSError, AttributeError):  # a thread that just ended
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


SERVER_THREADS = ("live-server", "lofibeats-live")  # the event loop and the stream workers


def bare_rate(model: LoadedModel, player: PlayerSettings, seconds: float) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of a bare Stream.read loop, one
    frame (as the server reads) at a time."""
    module, carry = model.module, carry_for(player.carry, model)
    stream = Stream(
        module,
        None,
        sampling=Sampling(0.9),
        seed=1,
        engine=player.engine,
        carry=carry,
        precision=player.weights,
    )
    block = stream.chunk_len - stream.crossfade
    frame = block * max(1, round(player.frame_ms / 1000 * module.sample_rate / block))
    stream.read(frame)
    done, started, cpu = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - started < seconds:
        stream.read(frame)
        done += frame
    return done / (time.perf_counter() - started), done / (time.thread_time() - cpu)


def served_rate(server: ServerThread, seconds: float) -> tuple[float, float]:
    """(samples per wall second, per CPU second of the server's threads: event loop and
    worker) that the server streams to a listener reporting everything played at once."""
    client = Client(server)
    client.send(type="start")
    take = client.next_json("take")["take"]
    got, started = 0, None
    while started is None or time.perf_counter() - started < seconds:
        item = client.recv(5)
        if isinstance(item, tuple) and item[0] == take:
            if started is None:  # from the first frame: the model is loaded and warm
                started, cpu, first = time.perf_counter(), thread_cpu(SERVER_THREADS), item[1]
            got = item[1] + item[2] - first
            client.send(type="played", take=take, position=item[1] + item[2])
    rates = got / (time.perf_counter() - started), got / (thread_cpu(SERVER_THREADS) - cpu)
    client.close()
    return rates


# ------------------------------------------------------------------ 2./3. listeners
@dataclass
class Listening:
    first_audio: float | None = None
    underruns: list[float] = field(default_factory=list)  # audio seconds played before each
    played: int = 0
    rtf: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    error: str | None = None


def listen(server: ServerThread, seconds: float, result: Listening) -> None:
    """Play in real time like the page's worklet for `seconds` after the first audio."""
    try:
        client = Client(server)
        start_samples = None
        sent_at = time.perf_counter()
        client.send(type="start")
        take, sr, received = None, None, 0
        playing, clock, last_report = False, None, 0.0
        while True:
            now = time.perf_counter()
            if clock is not None:  # the playback clock drains the buffer
                want = (now - clock) * sr
                clock = now
                if playing:
                    if received - result.played >= want:
                        result.played += round(want)
                    else:
                        result.played = received
                        playing = False
                        result.underruns.append(result.played / sr)
            if take is not None and not playing and received - result.played >= start_samples:
                playing = True
                if result.first_audio is None:
                    result.first_audio = now - sent_at
                    clock, ends = now, now + seconds
            if result.first_audio is not None and now >= ends:
                break
            if take is not None and now - last_report >= REPORT_SECONDS:
                client.send(type="played", take=take, position=result.played, playing=playing)
                last_report = now
            item = client.recv(0.01)
            if isinstance(item, dict) and item.get("type") == "take":
                take, sr = item["take"], item["sr"]
                start_samples = round(client.hello["start_seconds"] * sr)
            elif isinstance(item, tuple) and item[0] == take:
                received = item[1] + item[2]
        result.rtf, result.cpu = client.rtf, client.cpu
        client.close()
    except Exception as exc:  # reported in the table, not a traceback from a thread
        result.error = f"{type(exc).__name__}: {exc}"


def first_audio(server: ServerThread, tries: int) -> list[float]:
    times = []
    for _ in range(tries):
        result = Listening()
        listen(server, 0.0, result)
        if result.first_audio is not None:
            times.append(result.first_audio)
    return times


def soak(server: ServerThread, streams: int, seconds: float, memory: list) -> list[Listening]:
    results = [Listening() for _ in range(streams)]
    threads = [
        threading.Thread(target=listen, args=(server, seconds, r), daemon=True) for r in results
    ]
    for t in threads:
        t.start()
    started = time.perf_counter()
    while any(t.is_alive() for t in threads):
        memory.append((time.perf_counter() - started, rss_mb()))
        for t in threads:
            t.join(timeout=5.0 / len(threads))
    return results


def browser_soak(
    server: ServerThread, streams: int, seconds: float, memory: list, screenshot: Path | None
) -> list[dict]:
    from selenium.webdriver.common.keys import Keys

    out = []
    with chromium(1000, 960) as driver:
        handles = []
        for i in range(streams):
            if i:
                driver.switch_to.new_window("tab")
            handles.append(driver.current_window_handle)
            driver.get(server.url)
            time.sleep(1.0)
            driver.find_element("id", "play").click()
        started = time.perf_counter()
        shot_at = min(seconds, 16.0)  # the spectrogram has scrolled across
        knob_at = seconds / 2
        while time.perf_counter() - started < seconds:
            memory.append((time.perf_counter() - started, rss_mb()))
            time.sleep(5.0)
            if knob_at is not None and time.perf_counter() - started >= knob_at:
                driver.switch_to.window(handles[0])  # a key press: temperature to 0.89
                driver.find_element("id", "temperature").send_keys(Keys.ARROW_LEFT)
                knob_at = None
            if screenshot and time.perf_counter() - started >= shot_at:
                driver.switch_to.window(handles[0])
                driver.save_screenshot(str(screenshot))
                screenshot = None
        for handle in handles:
            driver.switch_to.window(handle)
            out.append(
                driver.execute_script(
                    "const l = window.lofi; return {first: l.firstAudioMs, underruns: l.underruns,"
                    " played: (l.status || {}).samplesPlayed, sr: l.take && l.take.sr,"
                    " rms: l.maxRms, stats: l.stats, errors: l.errors, knobs: l.knobLatencies};"
                )
            )
    return out


def slope(points: list[tuple[float, float]]) -> float | None:
    """MB per minute of a least-squares line through the samples after the first minute (the
    warm-up: model, kernel, allocator pools), or None for a soak too short to tell."""
    settled = [(t, mb) for t, mb in points if t >= 60.0]
    if len(settled) < 12:  # a minute of 5-s samples at least
        return None
    t, mb = np.array(settled).T
    return float(np.polyfit(t / 60, mb, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="last", help="a .ckpt, or last (newest under outputs/)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--streams", type=int, default=1, help="listeners during the soak")
    parser.add_argument("--carry", choices=("auto", "window", "state"), default="auto")
    parser.add_argument("--ahead", type=float, default=1.5, help="live.ahead_seconds")
    parser.add_argument(
        "--weights", choices=PRECISIONS, default="float32", help="the fused sample-level weights"
    )
    parser.add_argument("--throughput-seconds", type=float, default=5.0)
    parser.add_argument("--first-audio-tries", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="listen with headless Chromium")
    parser.add_argument("--screenshot", type=Path, help="save the page (implies --browser)")
    args = parser.parse_args()
    browser = args.browser or args.screenshot is not None
    if browser and chromium_missing():
        sys.exit(f"--browser: {chromium_missing()}")
    torch.set_num_threads(1)  # what live.py runs with (threads=1): one core per stream at most
    outputs = Path("outputs")
    ckpt = resolve_checkpoint(args.ckpt, outputs).absolute()
    player = PlayerSettings(ahead_seconds=args.ahead, carry=args.carry, weights=args.weights)
    settings = LiveSettings(
        outputs_dir=outputs,
        default_ckpt=ckpt,
        max_streams=max(args.streams, 1) + 1,
        player=player,
        knobs={"temperature": 0.9, "top_p": None},
    )
    info = describe_checkpoint(ckpt, outputs)
    with ServerThread(settings, Path(tempfile.mkdtemp()), preload=True) as server:
        model = server.live.models.get(info)
        sr = model.module.sample_rate
        print(f"checkpoint {ckpt}: {info.family}, {sr} Hz, frame {info.frame_size}")
        print(
            f"carry {carry_for(args.carry, model)} ({args.carry}), ahead {args.ahead} s, "
            f"1 torch thread; {load()} on {os.cpu_count()} cores"
        )
        bare, served = [], []
        for _ in range(3):  # interleaved, so background load hits both alike
            bare.append(bare_rate(model, player, args.throughput_seconds))
            served.append(served_rate(server, args.throughput_seconds))
        (b, b_cpu), (s, s_cpu) = (
            tuple(map(max, zip(*rates, strict=True))) for rates in (bare, served)
        )
        print("\n1. throughput (best of 3, interleaved; per CPU-s: over the CPU time of the")
        print("   generating thread / of the server's threads, what an unshared core gives)")
        print(f"   {'':<22}{'samples/s':>10}{'RTF':>8}{'per CPU-s':>11}{'RTF/CPU':>9}")
        for name, wall, cpu in (("bare Stream.read", b, b_cpu), ("served (unpaced)", s, s_cpu)):
            print(f"   {name:<22}{wall:>10.0f}{wall / sr:>7.2f}x{cpu:>11.0f}{cpu / sr:>8.2f}x")
        print(f"   served / bare: {s / b:.2f}x wall, {s_cpu / b_cpu:.2f}x per CPU-s")

        firsts = first_audio(server, args.first_audio_tries)
        print(
            f"\n2. first audio ({len(firsts)} fresh connections, start_seconds {settings.start_seconds} s)"
        )
        if firsts:
            print(
                f"   median {1000 * statistics.median(firsts):.0f} ms, worst {1000 * max(firsts):.0f} ms"
            )

        memory: list[tuple[float, float]] = []
        seconds = args.minutes * 60
        print(
            f"\n3. soak: {args.streams} listener(s) for {args.minutes:g} min ({'Chromium' if browser else 'scripted'}); {load()}"
        )
        started_cpu, started = time.process_time(), time.perf_counter()
        if browser:
            pages = browser_soak(server, args.streams, seconds, memory, args.screenshot)
            for i, page in enumerate(pages):
                late = [u for u in page["underruns"] if u["seconds"] > 1.0]
                print(
                    f"   tab {i}: first audio {page['first']:.0f} ms, "
                    f"{page['played'] / page['sr']:.1f} s played, underruns {len(page['underruns'])} "
                    f"({len(late)} after the first second), peak RMS {page['rms']:.3f}, knob "
                    f"heard after {[round(ms) for ms in page['knobs']]} ms, errors {page['errors']}"
                )
        else:
            for i, r in enumerate(soak(server, args.streams, seconds, memory)):
                if r.error:
                    print(f"   listener {i}: {r.error}")
                    continue
                print(
                    f"   listener {i}: {r.played / sr:.1f} s played, underruns {len(r.underruns)}"
                    f" {[round(u, 1) for u in r.underruns][:5]}, RTF median "
                    f"{statistics.median(r.rtf):.2f}x (min {min(r.rtf):.2f}x), CPU median "
                    f"{100 * statistics.median(r.cpu):.0f}% of a core (max {100 * max(r.cpu):.0f}%)"
                )
        wall = time.perf_counter() - started
        process = (time.process_time() - started_cpu) / wall
        print(
            f"   process CPU (server, listeners, GC): {100 * process:.0f}% of a core over {wall:.0f} s"
        )
        if memory:
            mbs = [mb for _, mb in memory]
            trend = slope(memory)
            told = "too short to tell (2 min at least)" if trend is None else f"{trend:+.2f} MB/min"
            print(
                f"   RSS: first {mbs[0]:.0f} MB, last {mbs[-1]:.0f} MB, max {max(mbs):.0f} MB "
                f"({len(memory)} samples); slope after the first minute: {told}"
            )


if __name__ == "__main__":
    main()
