"""lofibeats live without a browser: the real server (uvicorn, in a thread) and scripted
listeners over real WebSockets. Protocol, pacing, knobs, limits, bad input, cleanup."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from live_helpers import SR, lookback_run, make_runs, settings, shelf
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from lofibeats.generation.stream import Stream
from lofibeats.generation.style import style_path
from lofibeats.live.harness import ServerThread
from lofibeats.live.player import THREAD_PREFIX
from lofibeats.live.protocol import HEADER, ProtocolError, check_knobs, pack_frame, unpack_frame
from lofibeats.models.checkpoint import load_module
from lofibeats.models.plan_net import PLAN_BEAT_PRIOR, PLAN_TEMPERATURE
from lofibeats.models.sampling import Sampling


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("live")
    ckpts = make_runs(root)
    return root, {**ckpts, "lookback": lookback_run(root, ckpts["seq2seq"])}


def serve(runs, **changes) -> ServerThread:
    root, ckpts = runs
    changes.setdefault("default_ckpt", ckpts["seq2seq"])
    return ServerThread(settings(root, **changes), shelf(root))


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Listener:
    """A scripted page: keeps each take's audio as the worklet would (a frame that starts
    before the end replaces the rest), the knob revision of every sample, and every message."""

    def __init__(self, server: ServerThread, **kwargs: Any) -> None:
        url = server.url.replace("http://", "ws://") + "ws"
        # max_queue=None: always read the socket (a page does), so a close is answered at once
        self._connection = connect(
            url, proxy=None, compression=None, open_timeout=10, max_queue=None, **kwargs
        )
        self.ws = self._connection.__enter__()
        self.messages: list[dict[str, Any]] = []
        self.audio: dict[int, np.ndarray] = {}
        self.revs: dict[int, np.ndarray] = {}
        self.frames = 0
        self.hello = self.expect("hello")

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float = 10.0) -> dict[str, Any] | tuple[int, int, int, int]:
        data = self.ws.recv(timeout)
        if isinstance(data, str):
            message = json.loads(data)
            self.messages.append(message)
            return message
        take, rev, position, pcm = unpack_frame(data)
        old = self.audio.get(take, np.zeros(0, np.int16))
        assert position <= len(old), "a frame after a gap"
        self.audio[take] = np.concatenate([old[:position], pcm])
        revs = self.revs.get(take, np.zeros(0, np.int64))
        self.revs[take] = np.concatenate([revs[:position], np.full(len(pcm), rev)])
        self.frames += 1
        return take, rev, position, len(pcm)

    def expect(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Read until a message of `kind` (with `fields`) arrives; frames are kept."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.recv(max(0.01, deadline - time.monotonic()))
            wanted = isinstance(item, dict) and item["type"] == kind
            if wanted and all(item.get(k) == v for k, v in fields.items()):
                return item
        raise AssertionError(f"no {kind} {fields} within {timeout} s; got {self.messages[-5:]}")

    def samples(self, take: int, n: int, timeout: float = 10.0, report: bool = True) -> np.ndarray:
        """Read until take `take` has `n` samples, reporting them played as they come (and
        first what it already holds: frames read by `expect` went unreported, and a server
        that is `ahead_seconds` ahead of the last report waits for one)."""
        deadline = time.monotonic() + timeout
        if report and len(self.audio.get(take, ())) < n and take in self.audio:
            self.send(type="played", take=take, position=len(self.audio[take]))
        while len(self.audio.get(take, ())) < n:
            assert time.monotonic() < deadline, (
                f"take {take}: {len(self.audio.get(take, ()))} < {n}"
            )
            item = self.recv(max(0.01, deadline - time.monotonic()))
            if report and isinstance(item, tuple):
                self.send(type="played", take=take, position=len(self.audio[take]))
        return self.audio[take][:n]

    def replaced(self, take: int, position: int, rev: int, n: int, timeout: float = 10.0) -> None:
        """Read until take `take` holds `n` samples of revision `rev` from `position` on."""
        deadline = time.monotonic() + timeout
        while True:
            revs = self.revs.get(take, np.zeros(0))
            if len(revs) >= position + n and (revs[position : position + n] == rev).all():
                return
            assert time.monotonic() < deadline, f"take {take}: no rev {rev} at {position}"
            item = self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(item, tuple):
                self.send(type="played", take=take, position=position, playing=False)

    def drain(self, seconds: float) -> None:
        """Read (without reporting playback) for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.recv(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return

    def errors(self) -> list[str]:
        return [m["message"] for m in self.messages if m["type"] == "error"]

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def bare(ckpt: Path, seed: int, n: int, knob_at: int | None = None, **knob: Any) -> np.ndarray:
    """What a bare `Stream` of the same take makes (prime=none), as int16 the way it is sent;
    with `knob_at`, temperature/top_p are changed after that many samples."""
    module = load_module(ckpt)
    stream = Stream(module, None, sampling=Sampling(0.9), seed=seed)
    if knob_at is None:
        audio = stream.read(n)
    else:
        head = stream.read(knob_at)
        stream.sampling = Sampling(knob.get("temperature", 0.9), knob.get("top_p"))
        audio = torch.cat([head, stream.read(n - knob_at)], dim=1)
    _, _, _, pcm = unpack_frame(pack_frame(0, 0, 0, audio[0].numpy()))
    return pcm


# ---------------------------------------------------------------------- protocol
def test_frames_pack_to_a_header_and_int16() -> None:
    audio = np.array([0.0, 0.5, -1.0, 1.5, -2.0], np.float32)
    data = pack_frame(7, 3, 123456789012, audio)
    assert len(data) == HEADER.size + 2 * len(audio) == 26
    take, rev, position, pcm = unpack_frame(data)
    assert (take, rev, position) == (7, 3, 123456789012)
    assert pcm.tolist() == [0, 16384, -32767, 32767, -32767]
    assert struct.unpack_from("<IId", data) == (7, 3, 123456789012.0)
    with pytest.raises(ValueError, match="not a lofibeats live frame"):
        unpack_frame(b"short")


def test_loop_is_a_knob_from_0_to_1() -> None:
    assert check_knobs({"type": "set", "loop": 0}) == {"loop": 0.0}
    both = check_knobs({"type": "start", "loop": 1, "temperature": 0.5})
    assert both == {"loop": 1.0, "temperature": 0.5}
    with pytest.raises(ProtocolError, match=r"^loop=-0.1: give a number >= 0 and <= 1") as bad:
        check_knobs({"type": "set", "loop": -0.1})
    assert bad.value.key == "loop"


def test_checkpoint_list_names_family_rate_and_bits(runs) -> None:
    with serve(runs) as server:
        listing = httpx.get(server.url + "api/checkpoints").json()
        page = httpx.get(server.url)
        worklet = httpx.get(server.url + "static/worklet.js")
    rows = {row["name"].split("_")[-1]: row for row in listing["checkpoints"]}
    assert set(rows) == {"seq2seq", "vseq2seq", "frame", "gan", "plan", "lookback"}
    assert rows["seq2seq"]["sr"] == SR and rows["seq2seq"]["bits_per_sample"] == 7.25
    assert rows["frame"]["family"] == "seq2seq" and rows["frame"]["frame_size"] == 8
    assert rows["gan"]["family"] == "gan" and rows["gan"]["bits_per_sample"] is None
    assert rows["vseq2seq"]["name"] == "2026-01-01/00-00-01_vseq2seq"
    assert listing["default"] == "2026-01-01/00-00-00_seq2seq/checkpoints/last.ckpt"
    assert page.status_code == 200 and "lofibeats" in page.text and "/static/live.js" in page.text
    assert worklet.status_code == 200 and "javascript" in worklet.headers["content-type"]
    assert "registerProcessor" in worklet.text


# ---------------------------------------------------------------------- pacing
def test_generation_stays_a_bounded_distance_ahead_of_playback(runs) -> None:
    root, ckpts = runs
    with serve(runs, prime="none") as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        assert take["sr"] == SR and take["family"] == "seq2seq" and take["prime"].startswith("none")
        listener.drain(1.5)  # never reports playback: generation stops
        have = len(listener.audio[take["take"]])
        ahead = round(server.live.settings.player.ahead_seconds * SR)
        assert ahead <= have <= ahead + take["frame"]
        listener.drain(0.5)
        assert len(listener.audio[take["take"]]) == have  # and stays stopped
        stats = listener.expect("stats")
        assert stats["rtf"] > 1 and 0 <= stats["cpu"] <= 1.1
        listener.send(type="played", take=take["take"], position=SR // 2)
        listener.drain(0.5)
        assert len(listener.audio[take["take"]]) >= SR // 2 + ahead  # it plays on
        # what was served is exactly the stream of that seed, read in any frame sizes
        served = listener.audio[take["take"]]
        assert np.array_equal(served, bare(ckpts["seq2seq"], take["seed"], len(served)))
        assert served.std() > 100  # not silence
        listener.close()


@pytest.mark.parametrize("kind", ["seq2seq", "frame", "vseq2seq", "gan", "plan"])
def test_every_family_streams_and_takes_a_knob(runs, kind: str) -> None:
    root, ckpts = runs
    with serve(runs, default_ckpt=ckpts[kind]) as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        assert take["family"] == ("seq2seq" if kind == "frame" else kind)
        assert take["lookback"] is False and "loop" not in take["knobs"]
        audio = listener.samples(take["take"], SR // 2)
        listener.send(type="set", id=1, temperature=0.5)
        at = listener.expect("knobs", id=1)["position"]
        listener.replaced(take["take"], at, 1, take["frame"])
        assert audio.std() > 100 and not listener.errors()
        listener.close()


# ---------------------------------------------------------------------- knobs
def test_a_knob_applies_just_ahead_of_the_listener_and_only_from_there(runs) -> None:
    root, ckpts = runs
    with serve(runs, prime="none", ahead_seconds=1.5, knob_lead_seconds=0.25) as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        number, frame = take["take"], take["frame"]
        played = 3 * frame
        listener.samples(number, played, report=False)
        # a report from a page whose playback holds still (so the server does not move on)
        listener.send(type="played", take=number, position=played, playing=False)
        listener.drain(0.3)  # generation runs ahead again
        ahead = len(listener.audio[number])
        assert ahead >= played + round(0.5 * SR)
        listener.send(type="set", id="k1", temperature=0.2, top_p=0.5)
        reply = listener.expect("knobs", id="k1")
        at = reply["position"]
        # the first frame at least knob_lead_seconds after the listener, not after the buffer
        assert played + 0.25 * SR <= at < played + 0.25 * SR + frame + 0.1 * SR
        assert at < ahead and at % frame == 0
        assert reply["rev"] == 1 and reply["knobs"] == {"temperature": 0.2, "top_p": 0.5}
        listener.replaced(number, at, 1, 2 * frame)
        audio = listener.audio[number][: at + 2 * frame]
        revs = listener.revs[number][: at + 2 * frame]
        assert (revs[:at] == 0).all() and (revs[at:] == 1).all()
        assert np.array_equal(
            audio, bare(ckpts["seq2seq"], take["seed"], len(audio), at, temperature=0.2, top_p=0.5)
        )
        listener.close()


def test_style_and_creativity_knobs_of_a_vseq2seq_take(runs, tmp_path: Path) -> None:
    root, ckpts = runs
    clip = tmp_path / "my clip.flac"
    t = np.arange(SR * 2) / SR
    sf.write(clip, 0.4 * np.sin(2 * np.pi * 330 * t), SR)
    with serve(runs, default_ckpt=ckpts["vseq2seq"]) as server:
        upload = httpx.post(
            server.url + "api/upload?name=my%20clip.flac", content=clip.read_bytes()
        )
        assert upload.status_code == 200
        uploaded = upload.json()
        assert uploaded["name"] == "my clip.flac" and uploaded["seconds"] == pytest.approx(2.0)
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        assert take["latent"] and take["family"] == "vseq2seq" and take["prime"] == "val clip 0"
        ids = [target["id"] for target in take["style_targets"]]
        assert ids[0] == "val:0" and uploaded["id"] in ids and ids[-1] == "random"
        number = take["take"]
        listener.samples(number, 2 * take["frame"])
        for i, knob in enumerate(
            [
                {"style": "val:1"},
                {"style": uploaded["id"]},
                {"style": "random"},
                {"creativity": 0.0},
            ],
            start=1,
        ):
            listener.send(type="set", id=i, **knob)
            reply = listener.expect("knobs", id=i)
            assert reply["rev"] == i and {**reply["knobs"], **knob} == reply["knobs"]
            listener.samples(number, reply["position"] + take["frame"])
        assert not listener.errors()
        listener.send(type="set", id="bad", style="upload:doesnotexist")
        assert "no such upload" in listener.expect("error", id="bad")["message"]
        listener.close()


def test_auto_knobs_loop_a_lookback_take_and_sample_the_others(runs) -> None:
    """`loop=auto temperature=auto` resolve per take, as generate.py does: a lookback take
    starts looping (0.95 at temperature 0.1), a plain take samples at 0.9 and a plan take at
    its family's measured temperature, without a note."""
    root, ckpts = runs
    changes = dict(prime="none", frame_ms=10, ahead_seconds=0.3, knob_lead_seconds=0.0)
    live = settings(root, default_ckpt=ckpts["lookback"], **changes)
    live = dataclasses.replace(live, knobs={"temperature": "auto", "top_p": None, "loop": "auto"})
    with ServerThread(live, shelf(root)) as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        assert take["knobs"] == {"temperature": 0.1, "top_p": None, "loop": 0.95}
        (session,) = server.live.sessions.values()
        assert session.player._take.stream.sampling == Sampling(0.1, loop=0.95)
        listener.samples(take["take"], take["frame"])
        plain = ckpts["seq2seq"].relative_to(root / "outputs").as_posix()
        listener.send(type="start", checkpoint=plain)
        other = listener.expect("take", lookback=False)
        assert other["knobs"] == {"temperature": 0.9, "top_p": None}
        listener.samples(other["take"], other["frame"])
        assert session.player._take.stream.sampling == Sampling(0.9)
        planned = ckpts["plan"].relative_to(root / "outputs").as_posix()
        listener.send(type="start", checkpoint=planned)
        plan = listener.expect("take", lookback=False)
        assert plan["knobs"]["temperature"] == PLAN_TEMPERATURE  # the plan family's own
        assert not [m for m in listener.messages if m.get("type") == "note"]
        listener.close()


def test_the_loop_knob_plays_a_lookback_take_and_no_other(runs) -> None:
    """A lookback take starts from the command line's loop and offers the knob; a change is
    what a bare Stream makes with that loop set there. A model without a lookback offers none:
    a take of it plays as trained, and a non-zero loop is refused."""
    root, ckpts = runs
    changes = dict(prime="none", frame_ms=10, ahead_seconds=0.3, knob_lead_seconds=0.0)
    live = settings(root, default_ckpt=ckpts["lookback"], **changes)
    live = dataclasses.replace(live, knobs={**live.knobs, "loop": 0.25})
    with ServerThread(live, shelf(root)) as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        assert take["lookback"] and take["carry"] == "state" and take["knobs"]["loop"] == 0.25
        number, frame = take["take"], take["frame"]
        listener.samples(number, 2 * frame)
        listener.send(type="set", id=1, loop=0.5)
        reply = listener.expect("knobs", id=1)
        assert reply["knobs"] == {"temperature": 0.9, "top_p": None, "loop": 0.5}
        (session,) = server.live.sessions.values()
        assert session.player._take.stream.sampling == Sampling(0.9, loop=0.5)
        at = reply["position"]
        listener.replaced(number, at, reply["rev"], frame)  # the frames the change re-sent
        served = listener.samples(number, at + frame)
        stream = Stream(
            load_module(ckpts["lookback"]),
            None,
            sampling=Sampling(0.9, loop=0.25),
            seed=take["seed"],
            carry="state",
        )
        head = stream.read(at)
        stream.sampling = Sampling(0.9, loop=0.5)
        audio = torch.cat([head, stream.read(frame)], dim=1)[0].numpy()
        assert np.array_equal(served, unpack_frame(pack_frame(0, 0, 0, audio))[3])
        plain = ckpts["seq2seq"].relative_to(root / "outputs").as_posix()
        listener.send(type="start", checkpoint=plain)
        other = listener.expect("take", lookback=False)
        assert other["family"] == "seq2seq" and "loop" not in other["knobs"]
        assert "has no lookback, so it plays as trained" in listener.expect("note")["message"]
        listener.send(type="set", id=2, loop=0.5)
        refused = listener.expect("error", id=2)
        assert refused["key"] == "loop" and "only a model with a lookback" in refused["message"]
        listener.samples(other["take"], frame)  # it plays on, as trained
        assert session.player._take.stream.sampling == Sampling(0.9)
        listener.close()


def test_the_beat_prior_knob_plays_a_plan_take_and_no_other(runs) -> None:
    """A plan take starts at beat_prior=auto (the family's 15) and offers the knob; a change is
    what a bare Stream makes with that prior set there. A model without a plan offers none and
    refuses a non-zero prior."""
    root, ckpts = runs
    changes = dict(prime="none", frame_ms=10, ahead_seconds=0.3, knob_lead_seconds=0.0)
    live = settings(root, default_ckpt=ckpts["plan"], **changes)
    live = dataclasses.replace(live, knobs={**live.knobs, "beat_prior": "auto"})
    with ServerThread(live, shelf(root)) as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        assert take["plan"] and take["knobs"]["beat_prior"] == PLAN_BEAT_PRIOR
        number, frame = take["take"], take["frame"]
        listener.samples(number, 2 * frame)
        listener.send(type="set", id=1, beat_prior=0)
        reply = listener.expect("knobs", id=1)
        assert reply["knobs"]["beat_prior"] == 0.0
        (session,) = server.live.sessions.values()
        sampling = session.player._take.stream.sampling
        assert sampling == Sampling(0.9, beat_prior=0.0)
        at = reply["position"]
        listener.replaced(number, at, reply["rev"], frame)
        served = listener.samples(number, at + frame)
        stream = Stream(
            load_module(ckpts["plan"]),
            None,
            sampling=Sampling(0.9, beat_prior=PLAN_BEAT_PRIOR),
            seed=take["seed"],
            carry="state",
        )
        head = stream.read(at)
        stream.sampling = sampling
        audio = torch.cat([head, stream.read(frame)], dim=1)[0].numpy()
        assert np.array_equal(served, unpack_frame(pack_frame(0, 0, 0, audio))[3])
        plain = ckpts["seq2seq"].relative_to(root / "outputs").as_posix()
        listener.send(type="start", checkpoint=plain)
        other = listener.expect("take", plan=False)
        assert "beat_prior" not in other["knobs"]
        listener.send(type="set", id=2, beat_prior=5)
        refused = listener.expect("error", id=2)
        assert refused["key"] == "beat_prior" and "only plan models" in refused["message"]
        listener.samples(other["take"], frame)
        listener.close()


def test_beat_prior_is_a_knob_from_0_to_its_maximum() -> None:
    assert check_knobs({"type": "set", "beat_prior": 30}) == {"beat_prior": 30.0}
    with pytest.raises(ProtocolError, match=r"^beat_prior=-1: give a number >= 0") as bad:
        check_knobs({"type": "set", "beat_prior": -1})
    assert bad.value.key == "beat_prior"


# ---------------------------------------------------------------------- bad input
BAD_MESSAGES = [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ("[" * 3000 + "]" * 3000, "over the 4096-byte limit"),
    (json.dumps({"type": "dance"}), "type='dance': use one of start, set"),
    (json.dumps({"type": "set", "temperature": 7}), "temperature=7: give a number >= 0 and <= 2"),
    (json.dumps({"type": "set", "temperature": "hot"}), "temperature='hot'"),
    (json.dumps({"type": "set", "top_p": 0}), "top_p=0: give a number > 0 and <= 1"),
    (json.dumps({"type": "set", "loop": 1.5}), "loop=1.5: give a number >= 0 and <= 1"),
    (json.dumps({"type": "set", "volume": 11}), "volume: not a knob; the knobs are"),
    (
        json.dumps({"type": "set", "style": "../../etc/passwd"}),
        "style='../../etc/passwd': give one of",
    ),
    (json.dumps({"type": "set", "creativity": 2}), "only vseq2seq models have a latent z"),
    (
        json.dumps({"type": "start", "checkpoint": "../../../etc/passwd"}),
        "not a run under outputs/",
    ),
    (json.dumps({"type": "played", "take": 0, "position": -5}), "played: position=-5"),
    (json.dumps({"type": "set", "temperature": 0.5, "id": ["x"] * 50}), "id="),
]


def test_bad_input_gets_a_clear_message_and_the_stream_goes_on(runs) -> None:
    with serve(runs) as server:
        listener = Listener(server)
        listener.send(type="new_take")
        assert "send start first" in listener.expect("error")["message"]
        listener.send(type="start")
        take = listener.expect("take")
        listener.samples(take["take"], take["frame"])
        for text, expected in BAD_MESSAGES:
            listener.ws.send(text)
            assert expected in listener.expect("error")["message"], text
            before = len(listener.audio[take["take"]])
            listener.samples(take["take"], before + take["frame"])  # it plays on
        listener.ws.send(b"\x00\x01binary")
        assert "binary messages are not control messages" in listener.expect("error")["message"]
        # an unreadable checkpoint: one line, and the take goes on
        broken = server.live.settings.outputs_dir / "broken/checkpoints/last.ckpt"
        broken.parent.mkdir(parents=True)
        broken.write_bytes(b"not a checkpoint")
        listener.send(type="start", checkpoint="broken/checkpoints/last.ckpt")
        assert "cannot read checkpoint" in listener.expect("error")["message"]
        listener.samples(take["take"], len(listener.audio[take["take"]]) + take["frame"])
        assert [m["take"] for m in listener.messages if m["type"] == "take"] == [take["take"]]
        listener.close()
        broken.unlink()


def test_unreadable_or_oversized_uploads_are_refused_with_a_reason(runs) -> None:
    with serve(runs, max_upload_bytes=50_000) as server:
        text = httpx.post(server.url + "api/upload?name=notes.txt", content=b"hello " * 100)
        empty = httpx.post(server.url + "api/upload?name=a.wav", content=b"")
        big = httpx.post(server.url + "api/upload?name=big.wav", content=b"\0" * 60_000)
        silent = np.zeros(SR, np.float32)
        path = server.live.uploads.folder.parent / "silent.wav"
        sf.write(path, silent, SR)
        quiet = httpx.post(server.url + "api/upload?name=silent.wav", content=path.read_bytes())
    assert (
        text.status_code == 400
        and "upload 'notes.txt': not a readable audio clip" in text.json()["error"]
    )
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    assert big.status_code == 413 and "over the 0.0476837 MiB limit" in big.json()["error"]
    assert quiet.status_code == 400 and "digital silence" in quiet.json()["error"]


# ---------------------------------------------------------------------- listeners
def test_each_listener_gets_its_own_take_up_to_max_streams_then_busy(runs) -> None:
    with serve(runs, max_streams=2) as server:
        first, second = Listener(server), Listener(server)
        for listener in (first, second):
            listener.send(type="start")
        takes = [first.expect("take"), second.expect("take")]
        assert takes[0]["take"] != takes[1]["take"] and takes[0]["seed"] != takes[1]["seed"]
        third = Listener(server)  # connecting is free; playing takes a slot
        third.send(type="start")
        busy = third.expect("busy")
        assert "all 2 streams of this server are playing (live.max_streams=2)" in busy["message"]
        with pytest.raises(ConnectionClosed) as closed:
            third.recv(5)
        assert closed.value.rcvd.code == 1013
        first.close()
        assert wait_for(lambda: len(server.live.sessions) == 1)
        fourth = Listener(server)
        fourth.send(type="start")
        assert fourth.expect("take")["take"] not in {t["take"] for t in takes}
        # new take: another seed, frames restart at 0 under the new take number
        second.send(type="new_take")
        renewed = second.expect("take")
        assert renewed["take"] > takes[1]["take"] and renewed["seed"] != takes[1]["seed"]
        assert len(second.samples(renewed["take"], 100)) == 100
        second.close()
        fourth.close()


def test_a_closed_socket_frees_its_slot_and_thread_at_once(runs) -> None:
    with serve(runs) as server:
        listeners = [Listener(server) for _ in range(3)]
        for listener in listeners:
            listener.send(type="start")
            listener.expect("take")
        workers = [session.player.thread for session in server.live.sessions.values()]
        assert len(workers) == 3 and all(w.is_alive() for w in workers)
        assert all(w.name.startswith(THREAD_PREFIX) for w in workers)
        for i, listener in enumerate(listeners):
            closed_at = time.monotonic()
            listener.close()
            assert wait_for(lambda i=i: len(server.live.sessions) == 2 - i, 1.0)
            assert wait_for(lambda i=i: sum(w.is_alive() for w in workers) == 2 - i, 1.0)
            assert time.monotonic() - closed_at < 1.0
        assert server.live.sessions == {}


def test_a_page_that_stops_reading_is_closed_and_freed(runs, monkeypatch) -> None:
    """A client that claims to play but never reads its socket: the server generates no
    further than the socket takes, and after live.send_timeout it closes the socket. (A page
    that neither reads nor reports stops its generation at once: see the pacing test.)"""
    monkeypatch.setattr(Stream, "read", lambda self, n: torch.rand(1, n) - 0.5)  # fill fast
    before = len(live_threads())
    with serve(runs, send_timeout=1.0, ahead_seconds=0.5) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert b"101 Switching Protocols" in sock.recv(4096)

        def frame(message: dict) -> bytes:  # a masked text frame
            payload, mask = json.dumps(message).encode(), os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            return bytes([0x81, 0x80 | len(payload)]) + mask + masked

        sock.sendall(frame({"type": "start"}))
        assert wait_for(lambda: len(server.live.sessions) == 1)
        started = time.monotonic()
        while server.live.sessions and time.monotonic() - started < 20:
            # "played" far beyond anything sent: only what the socket took counts
            with contextlib.suppress(OSError):
                sock.sendall(frame({"type": "played", "take": 0, "position": 10**9}))
            time.sleep(0.02)
        assert not server.live.sessions, "the stalled page was not closed"
        assert wait_for(lambda: len(live_threads()) == before, 2)
        sock.close()


def test_a_silent_page_is_closed_after_the_idle_timeout(runs) -> None:
    with serve(runs, idle_timeout=1.0) as server:
        listener = Listener(server)
        listener.send(type="start")
        listener.expect("take")
        closing = listener.expect("closing", timeout=5)
        assert "no message from the page for 1 s" in closing["message"]
        assert wait_for(lambda: not server.live.sessions)


def test_a_model_slower_than_real_time_is_reported(runs, monkeypatch) -> None:
    original = Stream.read

    def slow(self, n):  # a model at about 0.5x real time
        time.sleep(2 * n / SR)
        return original(self, n)

    monkeypatch.setattr(Stream, "read", slow)
    with serve(runs, stats_interval=0.2) as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        deadline = time.monotonic() + 5
        while True:
            stats = listener.expect("stats")
            if stats["rtf"] is not None or time.monotonic() > deadline:
                break
            listener.send(
                type="played", take=take["take"], position=len(listener.audio.get(take["take"], ()))
            )
        assert stats["rtf"] < 0.8 and stats["keeping_up"] is False
        listener.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_crashed_worker_says_why_and_frees_its_slot(runs, monkeypatch) -> None:
    def broken(self, n):
        raise RuntimeError("a bug in a model")

    monkeypatch.setattr(Stream, "read", broken)
    with serve(runs) as server:
        listener = Listener(server)
        listener.send(type="start")
        listener.expect("take")
        error = listener.expect("error")
        assert error["message"] == "the stream stopped: RuntimeError: a bug in a model"
        with pytest.raises(ConnectionClosed) as closed:
            listener.drain(5)
        assert closed.value.rcvd.code == 1011
        assert wait_for(lambda: not server.live.sessions)


# ---------------------------------------------------------------------- the guard
def test_exposed_server_requires_the_token(runs) -> None:
    with serve(runs, host="127.0.0.1", token="s3cret-token") as server:
        assert httpx.get(server.url).status_code == 403
        assert "access token" in httpx.get(server.url + "api/checkpoints").text
        with pytest.raises(InvalidStatus, match="403"):
            Listener(server)
        with httpx.Client() as client:
            redirect = client.get(server.url + "?token=s3cret-token")
            assert (
                redirect.status_code == 303
                and "lofibeats_live_token" in redirect.headers["set-cookie"]
            )
            assert client.get(server.url + "api/checkpoints").status_code == 200
            cookie = client.cookies.get("lofibeats_live_token")
        listener = Listener(server, additional_headers={"Cookie": f"lofibeats_live_token={cookie}"})
        listener.send(type="ping")
        listener.expect("pong")
        listener.close()
        with httpx.Client() as client:
            assert client.get(server.url + "?token=wrong").status_code == 403


def test_localhost_refuses_other_host_names_and_other_sites_websockets(runs) -> None:
    with serve(runs) as server:
        rebinding = httpx.get(server.url, headers={"Host": f"evil.example:{server.port}"})
        assert rebinding.status_code == 403 and "localhost only" in rebinding.text
        with pytest.raises(InvalidStatus, match="403"):
            Listener(server, origin="http://evil.example")
        listener = Listener(server, origin=f"http://127.0.0.1:{server.port}")
        listener.close()
        upload = server.url + "api/upload?name=a.wav"
        foreign = httpx.post(upload, content=b"x", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "other sites" in foreign.text
        own = httpx.post(upload, content=b"x", headers={"Origin": server.url.rstrip("/")})
        assert own.status_code == 400  # let in, and told the clip is unreadable


def test_style_path_of_a_take_is_what_generate_would_use(runs) -> None:
    """A vseq2seq take's z starts where generate.py's would for the same prime and seed."""
    root, ckpts = runs
    with serve(runs, default_ckpt=ckpts["vseq2seq"], prime="none") as server:
        listener = Listener(server)
        listener.send(type="start")
        take = listener.expect("take")
        served = listener.samples(take["take"], 300)
        listener.close()
    module = load_module(ckpts["vseq2seq"])
    path = style_path(module, None, batch=1, n_samples=1, seed=take["seed"])
    stream = Stream(module, None, sampling=Sampling(0.9), seed=take["seed"], z=path)
    _, _, _, expected = unpack_frame(pack_frame(0, 0, 0, stream.read(300)[0].numpy()))
    assert np.array_equal(served, expected)
