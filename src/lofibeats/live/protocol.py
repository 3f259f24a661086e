"""The WebSocket protocol of lofibeats live (`/ws`), and the checks every control message passes.

Server -> browser, binary: one frame of audio, a 16-byte header and mono int16 PCM:

    take     uint32   which take (a new take or checkpoint starts a new one)
    rev      uint32   the knob revision the frame was generated with
    position float64  the take's sample index of the frame's first sample
    pcm      int16[]  little-endian, at the take's sample rate

Positions grow frame after frame; a frame whose position is *before* the end of what was sent
replaces the audio from there on (a knob change rewinds the stream to just ahead of the
listener, see `player`). Little-endian throughout.

Server -> browser, JSON text: `hello` (limits, on connect), `take` (a take started: checkpoint,
rate, seed, engine, knobs, style targets), `knobs` (a knob change applied: its revision and the
position it applies from), `stats` (real-time factor, CPU, how far ahead), `note`, `error` (bad
input: the message says what to give; the stream goes on), `busy` (every stream is taken; the
socket closes) and `closing` (why the server closes the socket).

Browser -> server, JSON text (at most `live.max_message_bytes` each):

    {"type": "start", "checkpoint": <id from /api/checkpoints, optional>, <knobs, optional>}
    {"type": "set", "id": <optional tag, echoed>, <knobs>}   temperature, top_p, loop,
                                          creativity, style
    {"type": "new_take"}
    {"type": "played", "take": <n>, "position": <samples played>, "playing": <bool>}
    {"type": "pause"} / {"type": "resume"} / {"type": "ping"}
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from lofibeats.errors import ConfigError, LofiError
from lofibeats.validate import number

VERSION = 1
HEADER = struct.Struct("<IId")
CLIENT_TYPES = ("start", "set", "new_take", "played", "pause", "resume", "ping")
KNOBS = ("temperature", "top_p", "loop", "beat_prior", "creativity", "style")
# the ranges the page's knobs cover; beyond them a model only makes noise or silence
TEMPERATURE_MAX = 2.0
CREATIVITY_MAX = 4.0
BEAT_PRIOR_MAX = 100.0  # far past where a plan's codes become a one-beat loop (README)
STYLE_KINDS = ("prime", "random", "val:<n>", "upload:<id>")


class ProtocolError(LofiError):
    """A control message the server cannot use; `key` names the field at fault (or None)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def pack_frame(take: int, rev: int, position: int, audio: np.ndarray) -> bytes:
    """A binary frame: the header, then `audio` (floats in [-1, 1]) as little-endian int16."""
    pcm = np.clip(np.rint(np.asarray(audio, dtype=np.float32) * 32767.0), -32767, 32767)
    return HEADER.pack(take, rev, float(position)) + pcm.astype("<i2").tobytes()


def unpack_frame(data: bytes) -> tuple[int, int, int, np.ndarray]:
    """(take, rev, position, int16 samples) of a binary frame."""
    if len(data) < HEADER.size or (len(data) - HEADER.size) % 2:
        raise ValueError(f"not a lofibeats live frame ({len(data)} bytes)")
    take, rev, position = HEADER.unpack_from(data)
    return take, rev, int(position), np.frombuffer(data, dtype="<i2", offset=HEADER.size)


def parse_message(text: str | None, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a control message, its `type` checked; ProtocolError otherwise."""
    if text is None:
        raise ProtocolError("binary messages are not control messages: send JSON text")
    size = len(text.encode("utf-8", "replace"))
    if size > max_bytes:
        raise ProtocolError(
            f"control message of {size} bytes is over the {max_bytes}-byte limit: ignored"
        )
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f" ({exc.msg} at {exc.pos})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ProtocolError(f"control message is not JSON{where}: ignored") from None
    if not isinstance(message, dict):
        raise ProtocolError('a control message is a JSON object: {"type": ...}')
    kind = message.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"type={kind!r}: use one of {', '.join(CLIENT_TYPES)}", key="type")
    return message


def check_knobs(message: dict[str, Any], *, allow: tuple[str, ...] = ()) -> dict[str, Any]:
    """The knobs of a `set` / `start` message, checked: {name: value} for those present.

    temperature: 0..TEMPERATURE_MAX (0 = greedy); top_p: null (off) or (0, 1]; loop: 0..1
    (lookback models: the least share of each draw on the recalled sample); beat_prior:
    0..BEAT_PRIOR_MAX (plan models: the pull towards what the last beats played); creativity:
    0..CREATIVITY_MAX; style: "prime" (the prime's own z), "random", "val:<n>" or
    "upload:<id>" (whether it names a clip that exists is for the catalog to say; whether
    the model has a lookback, a plan or a latent z, for the player). Keys other than `type`,
    the knobs and `allow` are an error naming them.
    """
    unknown = sorted(set(message) - {"type", *KNOBS, *allow})
    if unknown:
        raise ProtocolError(
            f"{unknown[0]}: not a knob; the knobs are {', '.join(KNOBS)}", key=unknown[0]
        )
    knobs: dict[str, Any] = {}
    try:
        if "temperature" in message:
            knobs["temperature"] = number(
                message["temperature"], "temperature", low=0.0, high=TEMPERATURE_MAX
            )
        if "top_p" in message:
            value = message["top_p"]
            knobs["top_p"] = (
                None if value is None else number(value, "top_p", low=0.0, high=1.0, low_open=True)
            )
        if "loop" in message:
            knobs["loop"] = number(message["loop"], "loop", low=0.0, high=1.0)
        if "beat_prior" in message:
            knobs["beat_prior"] = number(
                message["beat_prior"], "beat_prior", low=0.0, high=BEAT_PRIOR_MAX
            )
        if "creativity" in message:
            knobs["creativity"] = number(
                message["creativity"], "creativity", low=0.0, high=CREATIVITY_MAX
            )
    except ConfigError as exc:
        key = str(exc).split("=", 1)[0]
        raise ProtocolError(f"{exc} (the stream goes on as it was)", key=key) from None
    if "style" in message:
        knobs["style"] = check_style(message["style"])
    return knobs


def check_style(value: Any) -> str:
    """A style target id: "prime", "random", "val:<n>" or "upload:<id>"."""
    ok = isinstance(value, str) and (
        value in ("prime", "random")
        or (value.startswith("val:") and value[4:].isdigit() and len(value) < 12)
        or (value.startswith("upload:") and value[7:].isalnum() and len(value) < 64)
    )
    if not ok:
        raise ProtocolError(
            f"style={value!r}: give one of {', '.join(STYLE_KINDS)} (the style list of the take)",
            key="style",
        )
    return value


def check_tag(value: Any) -> int | str | None:
    """The optional `id` of a `set` message (echoed in its `knobs` reply or error)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= 64:
        return value
    raise ProtocolError(f"id={str(value)[:40]!r}: give a number or a short string", key="id")


def check_played(message: dict[str, Any]) -> tuple[int, int, bool]:
    """(take, position, playing) of a `played` report."""
    try:
        take = number(message.get("take"), "take", kind=int, low=0)
        position = number(message.get("position"), "position", kind=int, low=0)
    except ConfigError as exc:
        raise ProtocolError(f"played: {exc}", key="position") from None
    return take, position, bool(message.get("playing", True))
