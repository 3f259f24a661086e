"""One listener's generation: a worker thread that runs a `Stream`, paced by what was played.

The worker generates frames (whole blocks of the model, about `frame_ms` long) while it is
less than `ahead_seconds` ahead of the position the browser last reported as played, then
sleeps until the browser plays on; so a stream costs at most what real time asks of it, its
memory is bounded, and a browser that stops reading (or reporting) stops its generation.

Knobs apply within a fraction of a second although up to `ahead_seconds` of audio is
generated ahead: before each frame the worker keeps a `StreamMark`, and a knob change rewinds
the stream to the first frame that starts at least `knob_lead_seconds` after the listener's
position, then regenerates from there with the new knob. The frames after that point are sent
again; the page's ring buffer replaces what it held from their position on (see `protocol`).
The audio up to that point is untouched, and what follows is exactly what the stream would
have made had the knob been set there.

Everything that touches a model (loading a checkpoint, val clips, style latents, decoding)
runs on the worker thread; the event loop only validates messages and moves bytes.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lofibeats.errors import LofiError
from lofibeats.generation.stream import Stream, StreamMark, carries_state, resolve_carry
from lofibeats.generation.style import style_path
from lofibeats.live.catalog import CheckpointInfo, LoadedModel, ModelCache, Uploads
from lofibeats.live.protocol import pack_frame
from lofibeats.models.decoding import auto_beat_prior, auto_temperature
from lofibeats.models.sampling import AUTO, Sampling, is_auto, needs_lookback
from lofibeats.models.vseq2seq import VSeq2SeqModule
from lofibeats.models.vseq2seq_net import DEFAULT_CREATIVITY

THREAD_PREFIX = "lofibeats-live"
RTF_WINDOW = 2.0  # seconds of generated audio the real-time factor is measured over
MAX_EXTRAPOLATION = 0.5  # seconds the play position is extrapolated past the last report


@dataclass(frozen=True)
class OutFrame:
    """A binary frame for the listener: take `take`'s audio up to sample `end`, packed."""

    take: int
    end: int
    data: bytes


@dataclass(frozen=True)
class PlayerSettings:
    """What every stream of a server shares (conf/live.yaml, `live.*` and the inference keys)."""

    ahead_seconds: float = 1.5
    knob_lead_seconds: float = 0.25
    frame_ms: float = 50.0
    carry: str = "auto"  # auto | window | state (see `carry_for`)
    prime: str = "val"
    style_blend_seconds: float = 0.5
    engine: str = "auto"
    weights: str = "float32"  # the fused sample-level weights' precision (`fused.PRECISIONS`)
    crossfade: int | None = None
    fade: str = "equal_power"
    decoding: str = "sample"
    seed: int | None = 0


class TakeCounter:
    """Take numbers over the whole server, so that every take (every listener's, every new
    take) gets its own seed: `seed + number`, or a random seed when `seed` is None."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._random = random.SystemRandom()

    def next(self) -> tuple[int, int]:
        with self._lock:
            number = next(self._count)
        seed = self._random.randrange(2**31) if self.seed is None else self.seed + number
        return number, seed


@dataclass
class _Take:
    """The take being generated and where it stands."""

    number: int
    seed: int
    model: LoadedModel
    stream: Stream
    frame_len: int
    center: torch.Tensor | None  # vseq2seq: the z the style knob points at (creativity 0)
    position: int = 0  # samples generated (the next frame's position)
    reported: int = 0  # what the browser reported played
    played_at: float = 0.0
    sent: int = 0  # what the sender handed to the socket

    @property
    def played(self) -> int:
        """What was played, as far as the server can tell: a page cannot have played what
        its socket has not taken."""
        return min(self.reported, self.sent)


class Player:
    """The generation of one listener, on its own worker thread (`start()` / `stop()`).

    `emit(item)` receives, on the worker thread, every binary frame (`OutFrame`) and JSON
    message (dict) for the listener, in order; it must not block.
    """

    def __init__(
        self,
        settings: PlayerSettings,
        models: ModelCache,
        uploads: Uploads,
        takes: TakeCounter,
        emit: Callable[[OutFrame | dict[str, Any]], None],
        name: str = "",
    ) -> None:
        self.settings, self.models, self.uploads, self.takes = settings, models, uploads, takes
        self.emit = emit
        self.thread = threading.Thread(
            target=self._run, name=f"{THREAD_PREFIX}-{name}", daemon=True
        )
        self._cond = threading.Condition()
        self._commands: list[tuple[str, Any]] = []
        self._stopping = False
        self._playing = True
        self._take: _Take | None = None
        self._info: CheckpointInfo | None = None
        self._knobs: dict[str, Any] = {}
        self._rev = 0
        self._marks: deque[tuple[int, StreamMark]] = deque()
        self._timings: deque[tuple[float, float]] = deque()  # (audio s, wall s) per frame
        self._cpu = 0.0
        self._stats_at = (time.perf_counter(), 0.0)

    # ------------------------------------------------------------ event-loop side
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the worker to end (it finishes the frame it is making, then returns)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end; whether it has."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def command(self, kind: str, value: Any = None) -> None:
        """Queue `take` (CheckpointInfo, knobs), `new_take`, `knobs` (checked knobs)."""
        with self._cond:
            self._commands.append((kind, value))
            self._cond.notify_all()

    def played(self, take: int, position: int, playing: bool) -> None:
        """The browser's report: take `take` has played `position` samples."""
        with self._cond:
            self._playing = playing
            current = self._take
            if current is None or take != current.number:
                return
            current.reported = position
            current.played_at = time.perf_counter()
            self._cond.notify_all()

    def sent(self, take: int, end: int) -> None:
        """The sender handed take `take`'s audio up to sample `end` to the socket."""
        with self._cond:
            if self._take is not None and self._take.number == take:
                self._take.sent = end
                self._cond.notify_all()

    def pause(self, paused: bool) -> None:
        with self._cond:
            self._playing = not paused
            self._cond.notify_all()

    def stats(self) -> dict[str, Any] | None:
        """Real-time factor, CPU share of one core since the last call, seconds ahead."""
        with self._cond:
            take = self._take
            if take is None:
                return None
            sr = take.model.module.sample_rate
            audio = sum(a for a, _ in self._timings)
            wall = sum(w for _, w in self._timings)
            now, cpu = time.perf_counter(), self._cpu
            then, cpu_then = self._stats_at
            self._stats_at = (now, cpu)
            ahead = (take.position - self._play_estimate(take, now)) / sr
        rtf = audio / wall if wall > 0 else None
        return {
            "type": "stats",
            "take": take.number,
            "rtf": rtf,
            "keeping_up": rtf is None or rtf >= 1.0,
            "cpu": (cpu - cpu_then) / max(now - then, 1e-9),
            "ahead": ahead,
            "generated": take.position / sr,
        }

    # ------------------------------------------------------------ worker side
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._stopping or self._commands or self._may_generate()):
                        self._cond.wait(0.5)
                    if self._stopping:
                        return
                    commands, self._commands = self._commands, []
                started = time.thread_time()
                for kind, value in commands:
                    self._handle(kind, value)
                if self._may_generate():
                    self._generate()
                self._cpu += time.thread_time() - started
        except Exception as exc:  # a bug: tell the listener (its socket closes), keep the traceback
            message = f"the stream stopped: {type(exc).__name__}: {exc}"
            self.emit({"type": "error", "message": message, "fatal": True})
            raise

    def _may_generate(self) -> bool:
        take = self._take
        if take is None or self._stopping:
            return False
        sr = take.model.module.sample_rate
        return take.position - take.played < self.settings.ahead_seconds * sr

    def _play_estimate(self, take: _Take, now: float) -> int:
        """Where the listener is now: the last report, moved on by the time since (while
        playing, at most MAX_EXTRAPOLATION), never past what was generated."""
        position = take.played
        if self._playing and take.played_at:
            sr = take.model.module.sample_rate
            position += round(min(now - take.played_at, MAX_EXTRAPOLATION) * sr)
        return min(position, take.position)

    def _handle(self, kind: str, value: Any) -> None:
        try:
            if kind == "take":
                info, knobs = value
                self._knobs.update(knobs)
                self._start_take(info)
            elif kind == "new_take":
                if self._info is not None:
                    self._start_take(self._info)
            elif kind == "knobs":
                self._set_knobs(*value)
        except LofiError as exc:
            tag = value[1] if kind == "knobs" else None
            key = getattr(exc, "key", None)
            self.emit({"type": "error", "message": str(exc), "key": key, "id": tag})

    def _start_take(self, info: CheckpointInfo) -> None:
        model = self.models.get(info)  # CheckpointError: the old take goes on
        module, settings = model.module, self.settings
        number, seed = self.takes.next()
        notes, prime, prime_name = [], None, "none (near-silence)"
        if settings.prime == "val":
            try:
                index = number % max(1, model.val_count())
                clip = model.val_clip(index, module.context_len)
                prime, prime_name = torch.from_numpy(clip)[None], f"val clip {index}"
            except (LofiError, OSError) as exc:
                notes.append(f"no val clip to start from ({exc}): starting from near-silence")
        loop = self._knobs.get("loop", 0.0)
        if needs_lookback(loop) and not model.lookback:
            notes.append(
                f"loop={loop:g}: the {module.family} model has no lookback, so it plays as "
                "trained (the loop knob is for models trained with model.lookback)"
            )
        prior = self._knobs.get("beat_prior", AUTO)
        if not is_auto(prior) and prior and not model.plans:
            notes.append(
                f"beat_prior={prior:g}: the {module.family} model draws no plan, so it plays "
                "without one (the beat prior knob is for plan models)"
            )
        carry = carry_for(settings.carry, model)
        if carry == "state" and not carries_state(module.net):
            carry = "window"
            notes.append(f"the {module.family} model has no decoder state: carry=window")
        options: dict[str, Any] = {}
        center = None
        if model.latent:
            creativity = self._knobs.get("creativity")
            path = style_path(
                module,
                prime,
                batch=1,
                n_samples=1,
                seed=seed,
                creativity=DEFAULT_CREATIVITY if creativity is None else creativity,
            )
            options["z"], center = path, path.source.mu[0] if path.source else None
        stream = Stream(
            module,
            prime,
            sampling=self._sampling(model),
            seed=seed,
            engine=settings.engine,
            precision=settings.weights,
            carry=carry,
            crossfade=settings.crossfade if carry == "window" else 0,
            fade=settings.fade,
            **options,
        )
        block = stream.chunk_len - stream.crossfade
        per_frame = max(1, round(settings.frame_ms / 1000 * module.sample_rate / block))
        take = _Take(number, seed, model, stream, block * per_frame, center)
        with self._cond:
            self._take, self._info = take, info
            self._marks.clear()
            self._timings.clear()
        style = self._knobs.get("style")
        if model.latent and style is not None:
            try:
                take.center = self._style_center(take, style)
            except LofiError as exc:
                notes.append(str(exc))
                self._knobs.pop("style")
        if model.latent and (style is not None or "creativity" in self._knobs):
            stream.style.change_to(self._z_goal(take), 0)
        self.emit(self._take_message(take, carry, prime_name))
        for note in notes:
            self.emit({"type": "note", "message": note})

    def _take_message(self, take: _Take, carry: str, prime: str) -> dict[str, Any]:
        module = take.model.module
        head = getattr(module.config, "head", None)
        return {
            "type": "take",
            "take": take.number,
            "seed": take.seed,
            "rev": self._rev,
            "checkpoint": take.model.info.to_json(),
            "family": module.family,
            "sr": module.sample_rate,
            "head": head,
            "engine": take.stream.engine,
            "carry": carry,
            "prime": prime,
            "frame": take.frame_len,
            "knobs": self._knob_state(take.model),
            "latent": take.model.latent,
            "lookback": take.model.lookback,
            "plan": take.model.plans,
            "style_targets": take.model.style_targets(self.uploads),
        }

    def _knob_state(self, model: LoadedModel) -> dict[str, Any]:
        sampling = self._sampling(model)
        state = {"temperature": sampling.temperature, "top_p": sampling.top_p}
        if model.lookback:
            state["loop"] = sampling.loop
        if model.plans:
            state["beat_prior"] = sampling.beat_prior
        if model.latent:
            state["creativity"] = self._knobs.get("creativity", DEFAULT_CREATIVITY)
            state["style"] = self._knobs.get("style")
        return state

    def _sampling(self, model: LoadedModel) -> Sampling:
        """The knobs as a take of `model` decodes with them: "auto" resolved for it, loop only
        where it has a lookback and beat_prior only where it plans (the stream refuses them
        elsewhere)."""
        return Sampling.parse(
            self._knobs.get("temperature", 1.0),
            self._knobs.get("top_p"),
            self.settings.decoding,
            self._knobs.get("loop", 0.0) if model.lookback else 0.0,
            self._knobs.get("beat_prior", AUTO) if model.plans else 0.0,
            lookback=model.lookback,
            model_temperature=auto_temperature(model.module.net),
            model_beat_prior=auto_beat_prior(model.module.net),
        )

    @staticmethod
    def _refused(model: LoadedModel, knobs: dict[str, Any]) -> dict[str, str]:
        """{knob: why} for the knobs in `knobs` a take of `model` cannot take."""
        family = model.module.family
        refused: dict[str, str] = {}
        if not model.latent:
            for name in sorted({"creativity", "style"} & set(knobs)):
                refused[name] = (
                    f"{name}: only vseq2seq models have a latent z; this take is {family}"
                )
        loop = knobs.get("loop", 0.0)
        if needs_lookback(loop) and not model.lookback:
            refused["loop"] = (
                f"loop={knobs['loop']:g}: only a model with a lookback can loop what it "
                f"recalls; this take's {family} model has none"
            )
        prior = knobs.get("beat_prior", 0.0)
        if prior and not model.plans:
            refused["beat_prior"] = (
                f"beat_prior={prior:g}: only plan models draw a plan to pull towards the last "
                f"beats; this take's {family} model has none"
            )
        return refused

    def _style_center(self, take: _Take, style: str) -> torch.Tensor:
        """The z [D] a style target points at: the prime's posterior mean, a clip's, or a
        prior sample."""
        if style == "prime":
            source = take.stream.style.source
            assert source is not None
            return source.mu[0]
        if style == "random":
            dim = take.model.module.config.latent_dim
            generator = torch.Generator().manual_seed(take.seed * 1000 + self._rev)
            return torch.randn(dim, generator=generator)
        return take.model.clip_latent(style, self.uploads)

    def _z_goal(self, take: _Take) -> torch.Tensor:
        """Where z goes: the style center moved by creativity * sigma * eps of the take's own
        posterior (its prime's; no prime: the prior)."""
        path = take.stream.style
        creativity = self._knobs.get("creativity", DEFAULT_CREATIVITY)
        assert path.source is not None and take.center is not None
        spread = path.source.z(creativity) - path.source.mu
        return take.center.to(spread) + spread

    def _set_knobs(self, knobs: dict[str, Any], tag: int | str | None = None) -> None:
        take = self._take
        if take is None:
            self._knobs.update(knobs)
            return
        refused = self._refused(take.model, knobs)
        if refused:
            name, why = next(iter(refused.items()))
            message = f"{why} (the stream goes on)"
            self.emit({"type": "error", "key": name, "id": tag, "message": message})
            knobs = {k: v for k, v in knobs.items() if k not in refused}
            if not knobs:
                return
        latent = {"creativity", "style"} & set(knobs)
        center = take.center
        if "style" in knobs:
            center = self._style_center(take, knobs["style"])  # a DataError changes nothing
        self._knobs.update(knobs)
        take.center = center
        self._rev += 1
        at = self._rewind(take)
        take.stream.sampling = self._sampling(take.model)
        if take.model.latent and (latent or self._knobs.get("style") is not None):
            blend = round(self.settings.style_blend_seconds * take.model.module.sample_rate)
            take.stream.style.change_to(self._z_goal(take), blend)
        self.emit(
            {
                "type": "knobs",
                "id": tag,
                "take": take.number,
                "rev": self._rev,
                "position": at,
                "knobs": self._knob_state(take.model),
            }
        )

    def _rewind(self, take: _Take) -> int:
        """Rewind to the first frame at least `knob_lead_seconds` ahead of the listener; the
        position the stream now stands at."""
        sr = take.model.module.sample_rate
        with self._cond:
            target = self._play_estimate(take, time.perf_counter())
        target += round(self.settings.knob_lead_seconds * sr)
        while self._marks and self._marks[0][0] < target:
            self._marks.popleft()
        if self._marks:
            position, mark = self._marks[0]
            take.stream.rewind(mark)
            self._marks.clear()
            with self._cond:
                take.position = position
                take.sent = min(take.sent, position)
        return take.position

    def _generate(self) -> None:
        take = self._take
        assert take is not None
        stream, sr = take.stream, take.model.module.sample_rate
        mark = stream.mark()
        started = time.perf_counter()
        audio = stream.read(take.frame_len)[0].cpu().numpy()
        wall = time.perf_counter() - started
        data = pack_frame(take.number, self._rev, take.position, audio)
        frame = OutFrame(take.number, take.position + take.frame_len, data)
        with self._cond:
            self._marks.append((take.position, mark))
            keep_from = take.played - take.frame_len  # marks behind the listener are useless
            while self._marks and self._marks[0][0] < keep_from:
                self._marks.popleft()
            take.position += take.frame_len
            self._timings.append((take.frame_len / sr, wall))
            while sum(a for a, _ in self._timings) > RTF_WINDOW and len(self._timings) > 1:
                self._timings.popleft()
        self.emit(frame)


def carry_for(carry: str, model: LoadedModel) -> str:
    """How a take of `model` connects its blocks (`resolve_carry`, per checkpoint here)."""
    return resolve_carry(carry, model.module, (model.data_cfg or {}).get("mode", "windows"))


def warm_up(model: LoadedModel, settings: PlayerSettings) -> str:
    """Decode one block as a take would, so the first listener does not wait for the kernel
    to build; the engine's name."""
    module = model.module
    carry = carry_for(settings.carry, model)
    carry = carry if carries_state(module.net) else "window"
    options: dict[str, Any] = {}
    if isinstance(module, VSeq2SeqModule):
        options["z"] = style_path(module, None, batch=1, n_samples=1)
    stream = Stream(
        module,
        None,
        engine=settings.engine,
        precision=settings.weights,
        carry=carry,
        crossfade=settings.crossfade if carry == "window" else 0,
        fade=settings.fade,
        **options,
    )
    stream.read(module.chunk_len)
    return stream.engine
