"""The plan family's grain bank: what it keeps, how it joins grains, and that consecutive grains
of real audio overlap-add back to that audio."""

from __future__ import annotations

import math

import pytest
import torch

from lofibeats.models.grains import GrainBank

HOP = 16


def noise(length: int, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(1, length, generator=torch.Generator().manual_seed(seed))


def one_code_per_frame(audio: torch.Tensor, shift: int = 0) -> GrainBank:
    """A bank where frame f of `audio` has code f, so a code's one grain is that frame's."""
    frames = audio.shape[1] // HOP
    bank = GrainBank(codes=frames, size=1, hop=HOP, memory=0, shift=shift)
    centroids = torch.arange(frames, dtype=torch.float32)[:, None]
    bank.fit([audio], [torch.arange(frames)[None]], centroids)
    return bank


def log_spectrum(audio: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(audio.shape[-1])
    return torch.log(torch.fft.rfft(audio * window).abs().pow(2) + 1e-7)


def tone(cycles_per_hop: int, amplitude: float, phase: float, hop: int) -> torch.Tensor:
    t = torch.arange(2 * hop, dtype=torch.float32)
    return amplitude * torch.sin(2 * torch.pi * cycles_per_hop * t / hop + phase)


def test_a_tone_joins_a_grain_of_its_pitch_not_the_quietest_waveform() -> None:
    """The join is judged on spectra: a loud tone goes on with a grain of its own pitch cut at
    another phase, where the waveform's squared difference would pick a quiet grain of another
    pitch (and every such jump is an onset the beat does not have)."""
    hop = 64
    bank = GrainBank(codes=1, size=2, hop=hop, memory=0)
    same_pitch, other_quiet = tone(8, 0.5, torch.pi, hop), tone(20, 0.05, 0.0, hop)
    bank.grains[0] = torch.stack([same_pitch, other_quiet]).half()
    bank.count[0] = 2
    prime = tone(8, 0.5, 0.0, hop)[None]
    wave = [(g[:hop] - prime[0, hop:]).pow(2).mean() for g in (same_pitch, other_quiet)]
    assert wave[1] < wave[0]  # what a waveform join would have chosen
    _, voice = bank.render(torch.zeros(1, 1, dtype=torch.long), bank.begin(prime))
    assert torch.allclose(voice.grain[0], same_pitch, atol=1e-3)


@pytest.mark.parametrize("shift", [0, 5])
def test_consecutive_grains_play_back_the_audio_they_came_from(shift: int) -> None:
    """With slack, the join finds each grain's own start: the others meet the last grain
    worse."""
    audio = noise(40 * HOP)
    bank = one_code_per_frame(audio, shift)
    assert bank.grains.shape == (40, 1, 2 * HOP + 2 * shift)
    voice = bank.begin(audio[:, : 20 * HOP])
    first, voice = bank.render(torch.arange(20, 26)[None], voice)  # 6 grains: 5 hops at start
    second, voice = bank.render(torch.arange(26, 31)[None], voice)  # then a hop per grain
    played = torch.cat([first, second], 1)
    assert played.shape == (1, 10 * HOP)
    assert torch.allclose(played, audio[:, 20 * HOP : 30 * HOP], atol=2e-3)  # float16 grains


def test_a_code_keeps_its_own_frames_grains_and_an_unseen_code_borrows_the_nearest() -> None:
    audio = noise(12 * HOP)
    codes = torch.tensor([[0, 0, 0, 2, 2, 2, 0, 0, 2, 2, 0, 0]])
    bank = GrainBank(codes=3, size=8, hop=HOP, memory=0)
    centroids = torch.tensor([[0.0], [1.8], [2.0]])  # code 1 (no frame) is nearest code 2
    bank.fit([audio], [codes], centroids)
    frames_of = {0: [1, 2, 6, 7, 10, 11], 2: [3, 4, 5, 8, 9]}  # whole grains: frames 1..11
    assert bank.count.tolist() == [6, 5, 5]
    for code, frames in frames_of.items():
        expected = {tuple(audio[0, f * HOP - HOP : f * HOP + HOP].half().tolist()) for f in frames}
        kept = {tuple(g.tolist()) for g in bank.grains[code, : len(frames)]}
        assert kept == expected
    assert torch.equal(bank.grains[1], bank.grains[2])


def test_a_join_moves_a_grain_within_its_slack_to_meet_the_last_one() -> None:
    """A 200-Hz tone (80-sample period) cut at another phase: with 40 samples of slack either
    way (starts 2 apart) the grains continue the prime's tone in phase; without, they cannot."""
    t = torch.arange(60 * HOP) / 16000
    tone = 0.5 * torch.sin(2 * torch.pi * 200 * t)[None]
    prime, after = tone[:, : 30 * HOP], tone[:, 30 * HOP : 33 * HOP]
    errors = {}
    for shift in (0, 40):
        bank = GrainBank(codes=1, size=1, hop=HOP, memory=0, shift=shift)
        bank.fit([tone[:, 13:]], [torch.zeros(1, 60, dtype=torch.long)], torch.zeros(1, 1))
        played, _ = bank.render(torch.zeros(1, 4, dtype=torch.long), bank.begin(prime))
        errors[shift] = float((played - after).abs().max())
    assert errors[40] < 0.05 < 0.3 < errors[0]  # one sample of phase at most, against any


def test_the_grain_that_joins_best_plays_and_is_not_replayed_within_memory() -> None:
    audio = noise(64 * HOP, seed=1)
    bank = GrainBank(codes=1, size=4, hop=HOP, memory=3)
    bank.fit([audio], [torch.zeros(1, 64, dtype=torch.long)], torch.zeros(1, 1))
    grains = bank.grains[0].float()
    voice = bank.begin(grains[2:3])  # the prime ends as grain 2 does
    slot_of = {tuple(g.tolist()): i for i, g in enumerate(grains)}
    picks = []
    for _ in range(8):
        _, voice = bank.render(torch.zeros(1, 1, dtype=torch.long), voice)
        picks.append(slot_of[tuple(voice.grain[0].tolist())])
    joins = (log_spectrum(grains[:, :HOP]) - log_spectrum(grains[2, HOP:])).pow(2).mean(1)
    assert picks[0] == int(joins.argmin())  # the best join with the prime's last hop
    assert all(len(set(picks[i : i + 4])) == 4 for i in range(5))  # 4 slots, memory 3: a cycle


def test_with_every_grain_recently_played_the_least_recent_replays() -> None:
    """A code held longer than its grains last cycles through all of them (a loop of `size`
    grains), never one grain over and over (a 62.5-Hz buzz at 16 kHz)."""
    audio = noise(8 * HOP, seed=2)
    bank = GrainBank(codes=1, size=3, hop=HOP, memory=5)
    bank.fit([audio], [torch.zeros(1, 8, dtype=torch.long)], torch.zeros(1, 1))
    voice, picks = bank.begin(audio), []
    for _ in range(12):
        played, voice = bank.render(torch.zeros(1, 1, dtype=torch.long), voice)
        picks.append(int(voice.recent[0, -1]))
    assert sorted(picks[:3]) == [0, 1, 2]
    assert picks[3:] == (picks[:3] * 3)[:9]  # then round and round, oldest first


def test_the_join_spectra_follow_the_grains_when_they_are_refilled_loaded_or_written() -> None:
    """A bank keeps its grains' head spectra between frames, never stale ones."""
    codes = torch.zeros(1, 8, dtype=torch.long)
    bank, other = (GrainBank(codes=1, size=2, hop=HOP, memory=0) for _ in range(2))
    bank.fit([noise(8 * HOP, seed=1)], [codes], torch.zeros(1, 1))
    other.fit([noise(8 * HOP, seed=2)], [codes], torch.zeros(1, 1))
    first = bank.heads.clone()
    torch.testing.assert_close(first[0, 0], log_spectrum(bank.grains[0, 0, :HOP].float()))
    bank.load_state_dict(other.state_dict())
    assert not torch.equal(bank.heads, first) and torch.equal(bank.heads, other.heads)
    bank.grains[0, 1] = 0
    torch.testing.assert_close(bank.heads[0, 1], torch.full((HOP // 2 + 1,), math.log(1e-7)))
