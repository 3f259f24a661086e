"""At every validation: listen to the model. Logs prime|continuation audio and spectrograms.

The primes are fixed val clips (the same every time, so TensorBoard shows progress on the same
material); the continuation is generated exactly as `generate.py` would, at the model's rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lofibeats.audio.spectrogram import spectrogram_figure
from lofibeats.generation.engine import check_sampling
from lofibeats.generation.longform import generate_long
from lofibeats.generation.stream import resolve_carry
from lofibeats.models.decoding import auto_beat_prior, auto_temperature, has_lookback
from lofibeats.models.sampling import Sampling


class AudioSamples(pl.Callback):
    """Generate `seconds` after each of `n_primes` val primes; log audio + spectrogram; save wavs.

    `samples_dir` (the run's `samples/`) receives the latest takes as WAV files. `temperature`,
    `top_p`, `decoding`, `loop` and `beat_prior` are the decoding knobs (conf/callbacks
    interpolates the top-level ones of conf/sampling, which generate.py and eval.py read too);
    "auto" resolves for the model being trained.
    """

    def __init__(
        self,
        n_primes: int = 2,
        prime_seconds: float = 1.0,
        seconds: float = 1.0,
        temperature: float | str = 1.0,
        top_p: float | None = None,
        decoding: str = "sample",
        loop: float | str = 0.0,
        beat_prior: float | str = "auto",
        seed: int = 0,
        samples_dir: str | Path | None = None,
    ):
        self.n_primes = n_primes
        self.prime_seconds = prime_seconds
        self.seconds = seconds
        self.knobs = (temperature, top_p, decoding, loop, beat_prior)
        Sampling.parse(*self.knobs, prefix="callbacks.audio_samples.")  # bad values stop here
        self.seed = seed
        self.samples_dir = Path(samples_dir) if samples_dir else None
        self._primes: torch.Tensor | None = None

    def _fixed_primes(self, trainer: pl.Trainer, sr: int) -> torch.Tensor:
        if self._primes is None:
            n = max(1, round(self.prime_seconds * sr))
            clips = [trainer.datamodule.val_clip(i, n) for i in range(self.n_primes)]
            self._primes = torch.from_numpy(np.stack(clips)).float()
        return self._primes

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0 or self.n_primes < 1:
            return
        if getattr(trainer, "datamodule", None) is None or not hasattr(
            trainer.datamodule, "val_clip"
        ):
            return
        sr = pl_module.sample_rate
        primes = self._fixed_primes(trainer, sr).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.inference_mode():
            continuation = generate_long(
                pl_module,
                primes,
                round(self.seconds * sr),
                sampling=self.sampling_for(pl_module),
                seed=self.seed,
                progress=False,
                carry=resolve_carry("auto", pl_module, getattr(trainer.datamodule, "mode", None)),
            )
        pl_module.train(was_training)
        takes = torch.cat([primes, continuation], dim=1).clamp(-1, 1).cpu().numpy()
        self._log(trainer, takes, sr, split_at=primes.shape[1] / sr)

    def sampling_for(self, pl_module: pl.LightningModule) -> Sampling:
        """The knobs for `pl_module`: "auto" loops a model with a lookback, as generate.py does."""
        net = getattr(pl_module, "net", None)
        prefix = "callbacks.audio_samples."
        sampling = Sampling.parse(
            *self.knobs,
            prefix=prefix,
            lookback=has_lookback(net),
            model_temperature=auto_temperature(net),
            model_beat_prior=auto_beat_prior(net),
        )
        return check_sampling(net, sampling)

    def _log(self, trainer: pl.Trainer, takes: np.ndarray, sr: int, split_at: float) -> None:
        step = trainer.global_step
        tensorboard = next(
            (lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None
        )
        for i, take in enumerate(takes):
            if tensorboard is not None:
                writer = tensorboard.experiment
                writer.add_audio(f"samples/prime{i}", take[None, :], step, sample_rate=sr)
                title = f"prime {i} | continuation, step {step}"
                figure = spectrogram_figure(take, sr, title=title, split_at=split_at)
                writer.add_figure(f"spectrogram/prime{i}", figure, step, close=True)
            if self.samples_dir is not None:
                self.samples_dir.mkdir(parents=True, exist_ok=True)
                sf.write(self.samples_dir / f"prime{i}_latest.wav", take, sr, subtype="PCM_16")
