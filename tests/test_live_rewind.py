"""Stream.mark / rewind, what the live server applies knobs with: a rewound stream gives the
same samples again, and a knob set after the rewind gives what that knob would have given from
that point on, for every family and both carries."""

from __future__ import annotations

import pytest
import torch

from lofibeats.generation.stream import Stream
from lofibeats.generation.style import style_path
from lofibeats.models.gan import GanModule
from lofibeats.models.sampling import Sampling
from lofibeats.models.seq2seq import Seq2SeqModule
from lofibeats.models.vseq2seq import VSeq2SeqModule

SMALL = dict(sr=8000, prev_len_max=96, next_len=32, hidden=16, layers=1, embed_dim=8)


def build(kind: str):
    torch.manual_seed(0)
    if kind == "seq2seq":
        return Seq2SeqModule(**SMALL).eval()
    if kind == "frame":
        return Seq2SeqModule(**SMALL, frame_size=8, sample_hidden=16).eval()
    if kind == "vseq2seq":
        return VSeq2SeqModule(**SMALL, latent_dim=4).eval()
    return GanModule(sr=8000, prev_len_max=128, next_len=64, hidden=16, layers=1, ratios=[4, 4])


def make(module, carry: str) -> Stream:
    options = {}
    if isinstance(module, VSeq2SeqModule):
        options["z"] = style_path(module, None, batch=1, n_samples=1, seed=3)
    return Stream(module, None, sampling=Sampling(0.9), seed=11, carry=carry, **options)


CASES = [
    ("seq2seq", "window"),
    ("seq2seq", "state"),
    ("frame", "window"),
    ("vseq2seq", "window"),
    ("vseq2seq", "state"),
    ("gan", "window"),
]


@pytest.mark.parametrize(("kind", "carry"), CASES)
def test_rewind_replays_and_a_knob_after_it_equals_a_knob_set_there(kind: str, carry: str) -> None:
    module = build(kind)
    n = module.chunk_len - (module.default_crossfade if carry == "window" else 0)
    plain = make(module, carry)
    first = plain.read(2 * n)
    mark = plain.mark()
    ahead = plain.read(3 * n)
    plain.rewind(mark)
    assert torch.equal(plain.read(3 * n), ahead)  # the same samples again

    def knob(stream: Stream) -> None:
        stream.sampling = Sampling(0.3, top_p=0.8)
        if isinstance(module, VSeq2SeqModule):
            stream.style.change_to(torch.full((4,), 2.0), blend=n)

    plain.rewind(mark)
    knob(plain)
    rewound = plain.read(3 * n)
    direct = make(module, carry)
    assert torch.equal(direct.read(2 * n), first)
    knob(direct)
    assert torch.equal(direct.read(3 * n), rewound)
    assert not torch.equal(rewound, ahead)


def test_rewind_restores_the_knobs_of_the_mark() -> None:
    module = build("vseq2seq")
    stream = make(module, "state")
    stream.read(40)
    mark = stream.mark()
    stream.sampling = Sampling(0.1)
    stream.style.change_to(torch.zeros(4))
    stream.read(64)
    stream.rewind(mark)
    assert stream.sampling == Sampling(0.9)
    assert stream.style.position == mark.style[0] and stream.style.changes == []
