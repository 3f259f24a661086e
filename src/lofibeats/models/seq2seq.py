"""The seq2seq family: LSTM encoder over `prev`, LSTM decoder over `next`, a dense output head.

Batches are `(prev, next)` float tensors in [-1, 1], [B, Tp] and [B, Tn]; `next` follows `prev`.
The decoder's input at step t is the sample before the one it predicts: the last `prev` sample at
t = 0, then `next[t - 1]` (teacher forcing) or the model's own prediction (scheduled sampling).

With `frame_size` = k > 1 (SampleRNN's two tiers, see `frame_tier`) the LSTMs step once per
frame of k samples, reading the previous frame, and a sample-level tier predicts each sample from
its frame's LSTM output and the k samples before it. The same methods serve both designs: the
decoder inputs are then the k samples before `next` followed by `next[:-1]` (Tn + k - 1 tokens):
frame j reads inputs[jk : jk + k], and target t's sample window is inputs[t : t + k].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule
from lofibeats.models.frame_tier import (
    FrameSampler,
    SampleTier,
    check_frame_size,
    frame_values,
    left_pad,
)
from lofibeats.models.heads import HEADS, Sampling, build_head
from lofibeats.models.hparams import choice, merge_options, number
from lofibeats.models.networks import Decoder, Encoder, InputEmbedding, LSTMState
from lofibeats.models.schedules import StepSchedule
from lofibeats.units import to_samples

DECODINGS = ("sample", "greedy")
TEACHER_FORCING_DEFAULTS: dict[str, Any] = {
    "schedule": "constant",  # constant | linear | inverse_sigmoid
    "start": 1.0,  # probability of feeding the ground truth at step 0
    "end": 0.0,
    "steps": 3000,  # linear: steps from start to end
    "k": 300.0,  # inverse_sigmoid: decay speed (larger = later)
    "mode": "parallel",  # parallel (multi-pass) | exact (step-by-step loop)
    "passes": 2,  # parallel: decoder passes (1 teacher-forced + passes-1 on mixed inputs)
    "predictions": "sample",  # how the model's own predictions are drawn: sample | greedy
}


def top_p_option(value: Any, key: str) -> float | None:
    """A nucleus threshold in (0, 1], or None; anything else is a ConfigError naming `key`."""
    if value is None:
        return None
    top_p = number(value, key)
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"{key}={value!r}: give a probability in (0, 1], or null")
    return top_p


class Seq2SeqModule(LofiModule):
    """Seq2seq LightningModule; every argument is a plain config value (see conf/model/seq2seq.yaml).

    `prev_len_max` and `next_len` may be samples or durations ("0.25s"); they are stored as
    samples. `teacher_forcing` holds the keys of `TEACHER_FORCING_DEFAULTS`. `frame_size` > 1
    turns on the frame tier (see the module docstring), whose per-sample MLP is `sample_hidden`
    wide.
    """

    family = "seq2seq"

    def __init__(
        self,
        family: str = "seq2seq",
        sr: int = 8000,
        prev_len_max: int | str = 2048,
        next_len: int | str = 512,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.0,
        head: str = "mulaw",
        embed_dim: int = 64,
        regression_loss: str = "mse",
        learned_init: bool = True,
        forget_bias: float = 1.0,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        teacher_forcing: dict[str, Any] | None = None,
        decoding: str = "sample",
        temperature: float = 1.0,
        top_p: float | None = None,
        frame_size: int = 1,
        sample_hidden: int = 64,
    ) -> None:
        super().__init__()
        if family != self.family:
            raise ConfigError(f"model.family={family!r}: this module is {self.family!r}")
        sr = number(sr, "data.sr", kind=int, low=1)
        tf = merge_options(teacher_forcing, TEACHER_FORCING_DEFAULTS, "model.teacher_forcing")
        tf["mode"] = choice(tf["mode"], ("parallel", "exact"), "model.teacher_forcing.mode")
        tf["passes"] = number(tf["passes"], "model.teacher_forcing.passes", kind=int, low=2)
        for name in ("start", "end"):
            tf[name] = number(tf[name], f"model.teacher_forcing.{name}", low=0.0)
        tf["steps"] = number(tf["steps"], "model.teacher_forcing.steps", kind=int, low=1)
        tf["k"] = number(tf["k"], "model.teacher_forcing.k", low=1.0)
        tf["predictions"] = choice(
            tf["predictions"], DECODINGS, "model.teacher_forcing.predictions"
        )
        next_len = to_samples(next_len, sr, "data.next_len")
        frame_size = number(frame_size, "model.frame_size", kind=int, low=1)
        check_frame_size(frame_size, next_len)
        self.save_hyperparameters(
            {
                "family": self.family,
                "sr": sr,
                "prev_len_max": to_samples(prev_len_max, sr, "data.prev_len_max"),
                "next_len": next_len,
                "hidden": number(hidden, "model.hidden", kind=int, low=1),
                "layers": number(layers, "model.layers", kind=int, low=1),
                "dropout": number(dropout, "model.dropout", low=0.0),
                "head": choice(head, HEADS, "model.head"),
                "embed_dim": number(embed_dim, "model.embed_dim", kind=int, low=1),
                "regression_loss": choice(regression_loss, ("mse", "l1"), "model.regression_loss"),
                "learned_init": bool(learned_init),
                "forget_bias": number(forget_bias, "model.forget_bias"),
                "lr": number(lr, "model.lr", low=0.0),
                "weight_decay": number(weight_decay, "model.weight_decay", low=0.0),
                "warmup_steps": number(warmup_steps, "model.warmup_steps", kind=int, low=0),
                "teacher_forcing": tf,
                "decoding": choice(decoding, DECODINGS, "model.decoding"),
                "temperature": number(temperature, "model.temperature", low=0.0),
                "top_p": top_p_option(top_p, "model.top_p"),
                "frame_size": frame_size,
                "sample_hidden": number(sample_hidden, "model.sample_hidden", kind=int, low=1),
            }
        )
        hp = self.hparams
        framed = frame_size > 1
        self.head = build_head(
            hp.head, hp.sample_hidden if framed else hp.hidden, hp.regression_loss
        )
        self.embed = InputEmbedding(hp.embed_dim, self.head.n_classes)
        self.encoder = Encoder(
            self.lstm_input_dim, hp.hidden, hp.layers, hp.dropout, hp.learned_init, hp.forget_bias
        )
        self.decoder = Decoder(
            self.lstm_input_dim, hp.hidden, hp.layers, hp.dropout, forget_bias=hp.forget_bias
        )
        self.sample_tier = (
            SampleTier(frame_size, hp.hidden, hp.embed_dim, hp.sample_hidden) if framed else None
        )
        self.tf_schedule = StepSchedule(
            tf["schedule"], tf["start"], tf["end"], tf["steps"], tf["k"], "model.teacher_forcing"
        )

    # ----------------------------------------------------------------- network pieces
    @property
    def frame_size(self) -> int:
        """Samples per LSTM step (1: the sample-level design)."""
        return int(self.hparams.get("frame_size", 1))

    @property
    def lstm_input_dim(self) -> int:
        """Input width of the LSTMs: the sample embedding, or one value per sample of a frame."""
        return self.hparams.embed_dim if self.frame_size == 1 else self.frame_size

    @property
    def supports_fused_engine(self) -> bool:
        """Whether `lofibeats.generation.engine.FusedEngine` can run this model: the sample-level
        design only (frame models go through its `FrameEngine`)."""
        return self.frame_size == 1

    def lstm_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T] -> LSTM inputs: embedded samples [B, T, E], or frames [B, T / k, k]."""
        if self.frame_size == 1:
            return self.embed(tokens)
        values = frame_values(tokens, self.head.n_classes)
        return values.view(tokens.shape[0], tokens.shape[1] // self.frame_size, self.frame_size)

    def silence(self, batch: int, device: torch.device) -> torch.Tensor:
        """The silence token, [batch]."""
        return self.head.tokens(torch.zeros(batch, device=device))

    def encoder_state(self, prev_tokens: torch.Tensor) -> LSTMState:
        """The encoder's final (h, c) over prev tokens [B, Tp] (frames: left-padded with
        silence to whole frames)."""
        if self.frame_size > 1 and prev_tokens.shape[1] > 0:
            silence = self.silence(1, prev_tokens.device)
            prev_tokens = left_pad(prev_tokens, self.frame_size, silence)
        return self.encoder(self.lstm_inputs(prev_tokens))

    def encode(self, prev_tokens: torch.Tensor) -> LSTMState:
        """prev tokens [B, Tp] (see `head.tokens`) -> the decoder's initial state."""
        return self.encoder_state(prev_tokens)

    def run_decoder(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """The decoder LSTM over inputs [B, T, lstm_input_dim]: (outputs [B, T, H], state)."""
        return self.decoder(x, state)

    def decoder_step(self, x_t: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """One decoder LSTM step on x_t [B, lstm_input_dim]: (output [B, H], new state)."""
        return self.decoder.step(x_t, state)

    def with_cond(self, state: LSTMState, cond_t: torch.Tensor) -> LSTMState:
        """`state` with its per-step conditioning set to `cond_t`; seq2seq has none."""
        raise ValueError("the seq2seq decoder takes no conditioning input")

    def decode(
        self, inputs: torch.Tensor, state: LSTMState, frames: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Decoder input tokens [B, Tn + k - 1] -> (head outputs [B, Tn, ...], final state), one
        LSTM call. `frames` ([B, Tn]) replaces what the LSTM reads (default inputs[:, :Tn]):
        scheduled sampling feeds predictions there while the sample tier keeps `inputs`."""
        k = self.frame_size
        if frames is None:
            frames = inputs[:, : inputs.shape[1] - k + 1]
        h, state = self.run_decoder(self.lstm_inputs(frames), state)
        if self.sample_tier is None:
            return self.head(h), state
        return self.head(self.sample_tier(h, self.embed(inputs))), state

    def decode_step(self, x_t: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """One sample-level decoder step: input tokens [B] -> (logits [B, 256] or values [B],
        new state). Frame models decode a frame at a time (`decode`, `generate_tokens`)."""
        h, state = self.decoder_step(self.embed(x_t), state)
        return self.head(h), state

    def first_input(self, prev_tokens: torch.Tensor) -> torch.Tensor:
        """The decoder's input at step 0: the last `prev` token (silence if `prev` is empty)."""
        if prev_tokens.shape[1] > 0:
            return prev_tokens[:, -1]
        return self.silence(prev_tokens.shape[0], prev_tokens.device)

    def context(self, prev_tokens: torch.Tensor) -> torch.Tensor:
        """The k tokens before `next` [B, k]: the end of `prev`, left-padded with silence."""
        if self.frame_size == 1:
            return self.first_input(prev_tokens)[:, None]
        silence = self.silence(1, prev_tokens.device)
        return left_pad(prev_tokens[:, -self.frame_size :], self.frame_size, silence)

    # ----------------------------------------------------------------- teacher forcing
    def decoder_inputs(self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder inputs [B, Tn + k - 1]: the k tokens before next, then
        next[:-1] (k = 1: the last prev token, then next[:-1])."""
        return torch.cat([self.context(prev_tokens), next_tokens[:, :-1]], dim=1)

    def truth_mask(self, shape: torch.Size, ratio: float, device: torch.device) -> torch.Tensor:
        """Bernoulli(`ratio`) coins over the LSTM's input tokens [B, Tn], one per frame, True =
        feed the ground truth; frame 0 is always True (it reads the known end of prev).
        Drawn from the global RNG."""
        k = self.frame_size
        truth = torch.rand((shape[0], shape[1] // k), device=device) < ratio
        truth[:, 0] = True
        return truth.repeat_interleave(k, dim=1) if k > 1 else truth

    def teacher_forced(
        self, inputs: torch.Tensor, state: LSTMState, ratio: float = 1.0
    ) -> torch.Tensor:
        """Head outputs [B, Tn, ...] for decoder `inputs` from `state`, feeding the LSTM the
        ground truth with probability `ratio` per frame and the model's own predictions
        otherwise (model.teacher_forcing.mode: parallel or exact). Ratio 1 is one LSTM call."""
        if ratio >= 1.0:
            return self.decode(inputs, state)[0]
        n = inputs.shape[1] - self.frame_size + 1
        truth = self.truth_mask((inputs.shape[0], n), ratio, inputs.device)
        tf = self.hparams.teacher_forcing
        if tf["mode"] == "exact":
            return self.scheduled_exact(inputs, truth, state)
        return self.scheduled_parallel(inputs, truth, state, tf["passes"])

    def outputs(
        self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor, ratio: float = 1.0
    ) -> torch.Tensor:
        """Head outputs [B, Tn, ...] for predicting `next_tokens` (see `teacher_forced`)."""
        inputs = self.decoder_inputs(prev_tokens, next_tokens)
        return self.teacher_forced(inputs, self.encode(prev_tokens), ratio)

    def _own_predictions(self, out: torch.Tensor) -> torch.Tensor:
        greedy = self.hparams.teacher_forcing["predictions"] == "greedy"
        return self.head.sample(out.detach(), greedy=greedy)

    def scheduled_parallel(
        self, inputs: torch.Tensor, truth: torch.Tensor, state: LSTMState, passes: int
    ) -> torch.Tensor:
        """Parallel scheduled sampling: a teacher-forced pass without grad, then `passes - 1`
        passes whose LSTM inputs mix the ground truth (where `truth`) with the previous pass's
        predictions; only the last pass has grad. With greedy predictions, no ground truth and
        passes = T this is a Jacobi fixed-point iteration and equals exact autoregressive decoding
        (each pass makes one more leading position exact). Frame models mix whole frames; their
        sample tier always reads the ground truth (teacher forcing inside the frame)."""
        k = self.frame_size
        truth_frames = inputs[:, : truth.shape[1]]
        x = truth_frames
        with torch.no_grad():
            for _ in range(passes - 1):
                pred = self._own_predictions(self.decode(inputs, state, x)[0])
                fed = torch.cat([truth_frames[:, :k], pred[:, :-k]], dim=1)
                x = torch.where(truth, truth_frames, fed)
        return self.decode(inputs, state, x)[0]

    def scheduled_exact(
        self, inputs: torch.Tensor, truth: torch.Tensor, state: LSTMState
    ) -> torch.Tensor:
        """Step-by-step scheduled sampling (Bengio et al. 2015): a coin per step (`truth`), or
        per frame for frame models (one LSTM step, then the frame's sample tier in parallel)."""
        k, n = self.frame_size, truth.shape[1]
        outs = []
        x = inputs[:, :k]
        for t in range(0, n, k):
            if k == 1:
                out, state = self.decode_step(x[:, 0], state)
                out = out.unsqueeze(1)
            else:
                out, state = self.decode(inputs[:, t : t + 2 * k - 1], state, x)
            outs.append(out)
            if t + k < n:
                own = self._own_predictions(out)
                x = torch.where(truth[:, t + k : t + 2 * k], inputs[:, t + k : t + 2 * k], own)
        return torch.cat(outs, dim=1)

    # ----------------------------------------------------------------- Lightning hooks
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        prev, nxt = batch
        ratio = self.tf_schedule.value()
        next_tokens = self.head.tokens(nxt)
        out = self.outputs(self.head.tokens(prev), next_tokens, ratio)
        loss = self.head.loss(out, next_tokens)
        self.tf_schedule.advance()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tf_ratio", ratio)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        prev, nxt = batch
        next_tokens = self.head.tokens(nxt)
        out = self.outputs(self.head.tokens(prev), next_tokens, 1.0)
        bits = self.head.nll_bits(out, next_tokens)
        if self.hparams.head == "mulaw":
            loss = bits
        else:
            loss = self.head.loss(out, next_tokens)
            self.log("val/mse", nn.functional.mse_loss(out, next_tokens), sync_dist=True)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/bits_per_sample", bits, sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the total gradient L2 norm (before any clipping) and the learning rate."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads))
        self.log("lr", optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.warmup_steps == 0:
            return opt
        warmup = hp.warmup_steps

        def linear_warmup(step: int) -> float:
            return min(1.0, (step + 1) / warmup)

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- generation
    def sampling_options(
        self, temperature: float | None, decoding: str | None, top_p: float | None
    ) -> Sampling:
        """`continue_audio`'s sampling options, unset ones from the hparams, validated."""
        hp = self.hparams
        return Sampling(
            greedy=choice(decoding or hp.decoding, DECODINGS, "decoding") == "greedy",
            temperature=number(
                hp.temperature if temperature is None else temperature, "temperature", low=0.0
            ),
            top_p=hp.top_p if top_p is None else top_p_option(top_p, "top_p"),
        )

    def crop_prev(self, prev: torch.Tensor) -> torch.Tensor:
        """`prev` [B, T] cropped to the last `context_len` samples, as float32 on the device."""
        if prev.dim() != 2:
            raise ValueError(f"prev must be [batch, time], got shape {tuple(prev.shape)}")
        return prev[:, -self.context_len :].to(self.device, torch.float32)

    def generate_tokens(
        self,
        prev_tokens: torch.Tensor,
        state: LSTMState,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decode loop: `n_samples` tokens [B, n] after `prev_tokens`, from the decoder
        state `state`. `cond` [B, n, C] is a per-output-sample conditioning (`with_cond`; a
        frame step reads its first sample's)."""
        if self.sample_tier is not None:
            return self._generate_frames(prev_tokens, state, n_samples, sampling, generator, cond)
        x_t = self.first_input(prev_tokens)
        tokens = []
        for t in range(n_samples):
            if cond is not None:
                state = self.with_cond(state, cond[:, t])
            out, state = self.decode_step(x_t, state)
            x_t = self.head.sample(
                out,
                temperature=sampling.temperature,
                greedy=sampling.greedy,
                top_p=sampling.top_p,
                generator=generator,
            )
            tokens.append(x_t)
        return torch.stack(tokens, dim=1)

    def _generate_frames(
        self,
        prev_tokens: torch.Tensor,
        state: LSTMState,
        n_samples: int,
        sampling: Sampling,
        generator: torch.Generator | None,
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        assert self.sample_tier is not None
        k = self.frame_size

        def frame_step(frame_tokens: torch.Tensor, j: int) -> torch.Tensor:
            nonlocal state
            if cond is not None:
                state = self.with_cond(state, cond[:, j * k])
            h, state = self.decoder_step(self.lstm_inputs(frame_tokens)[:, 0], state)
            return h

        sampler = FrameSampler(self.sample_tier, self.embed, self.head)
        context = self.context(prev_tokens)
        return sampler.generate(context, frame_step, n_samples, sampling, generator)

    @torch.no_grad()
    def continue_audio(
        self,
        prev: torch.Tensor,
        n_samples: int,
        *,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        decoding: str | None = None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """Continue each row of `prev` ([B, T] in [-1, 1], cropped to the last `context_len`
        samples) by `n_samples`, decoding autoregressively one sample (frame models: one LSTM
        step per frame, then its samples) at a time.

        `decoding`: "sample" (softmax with `temperature`, optional nucleus `top_p`; inverse-CDF
        from `generator` uniforms, frame models: Gumbel-max) or "greedy" (argmax / the
        regression mean, which drifts to silence). Unset options take the model.decoding /
        temperature / top_p hparams.
        """
        sampling = self.sampling_options(temperature, decoding, top_p)
        prev = self.crop_prev(prev)
        if n_samples == 0:
            return prev.new_zeros(prev.shape[0], 0)
        prev_tokens = self.head.tokens(prev)
        state = self.encode(prev_tokens)
        tokens = self.generate_tokens(prev_tokens, state, n_samples, sampling, generator)
        return self.head.audio(tokens)
