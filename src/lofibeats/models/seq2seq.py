"""The seq2seq family: LSTM encoder over `prev`, LSTM decoder over `next`, a dense output head.

Batches are `(prev, next)` float tensors in [-1, 1], [B, Tp] and [B, Tn]; `next` follows `prev`.
The decoder's input at step t is the sample before the one it predicts: the last `prev` sample at
t = 0, then `next[t - 1]` (teacher forcing) or the model's own prediction (scheduled sampling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lofibeats.errors import ConfigError
from lofibeats.models.base import LofiModule
from lofibeats.models.heads import HEADS, build_head
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


def _top_p(value: Any, key: str) -> float | None:
    if value is None:
        return None
    top_p = number(value, key)
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"{key}={value!r}: give a probability in (0, 1], or null")
    return top_p


class Seq2SeqModule(LofiModule):
    """Seq2seq LightningModule; every argument is a plain config value (see conf/model/seq2seq.yaml).

    `prev_len_max` and `next_len` may be samples or durations ("0.25s"); they are stored as
    samples. `teacher_forcing` holds the keys of `TEACHER_FORCING_DEFAULTS`.
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
        self.save_hyperparameters(
            {
                "family": self.family,
                "sr": sr,
                "prev_len_max": to_samples(prev_len_max, sr, "data.prev_len_max"),
                "next_len": to_samples(next_len, sr, "data.next_len"),
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
                "top_p": _top_p(top_p, "model.top_p"),
            }
        )
        hp = self.hparams
        self.head = build_head(hp.head, hp.hidden, hp.regression_loss)
        self.embed = InputEmbedding(hp.embed_dim, self.head.n_classes)
        self.encoder = Encoder(
            hp.embed_dim, hp.hidden, hp.layers, hp.dropout, hp.learned_init, hp.forget_bias
        )
        self.decoder = Decoder(
            hp.embed_dim, hp.hidden, hp.layers, hp.dropout, forget_bias=hp.forget_bias
        )
        self.tf_schedule = StepSchedule(
            tf["schedule"], tf["start"], tf["end"], tf["steps"], tf["k"], "model.teacher_forcing"
        )

    # ----------------------------------------------------------------- network pieces
    def encode(self, prev_tokens: torch.Tensor) -> LSTMState:
        """prev tokens [B, Tp] (see `head.tokens`) -> the decoder's initial state."""
        return self.encoder(self.embed(prev_tokens))

    def decode(self, inputs: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """Input tokens [B, T] -> (head outputs [B, T, ...], final state), one LSTM call."""
        h, state = self.decoder(self.embed(inputs), state)
        return self.head(h), state

    def decode_step(self, x_t: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """One decoder step: input tokens [B] -> (logits [B, 256] or values [B], new state)."""
        h, state = self.decoder.step(self.embed(x_t), state)
        return self.head(h), state

    def first_input(self, prev_tokens: torch.Tensor) -> torch.Tensor:
        """The decoder's input at step 0: the last `prev` token (silence if `prev` is empty)."""
        if prev_tokens.shape[1] > 0:
            return prev_tokens[:, -1]
        silence = torch.zeros(prev_tokens.shape[0], device=prev_tokens.device)
        return self.head.tokens(silence)

    # ----------------------------------------------------------------- teacher forcing
    def decoder_inputs(self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder inputs [B, Tn]: the last prev token, then next[:-1]."""
        return torch.cat([self.first_input(prev_tokens)[:, None], next_tokens[:, :-1]], dim=1)

    @staticmethod
    def truth_mask(shape: torch.Size, ratio: float, device: torch.device) -> torch.Tensor:
        """Bernoulli(`ratio`) coins, True = feed the ground truth; position 0 is always True
        (it reads the last prev sample, which is known). Drawn from the global RNG."""
        truth = torch.rand(shape, device=device) < ratio
        truth[:, 0] = True
        return truth

    def outputs(
        self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor, ratio: float = 1.0
    ) -> torch.Tensor:
        """Head outputs [B, Tn, ...] for predicting `next_tokens`, feeding the ground truth with
        probability `ratio` per position and the model's own predictions otherwise
        (model.teacher_forcing.mode: parallel or exact). Ratio 1 is one decoder LSTM call."""
        state = self.encode(prev_tokens)
        inputs = self.decoder_inputs(prev_tokens, next_tokens)
        if ratio >= 1.0:
            return self.decode(inputs, state)[0]
        truth = self.truth_mask(inputs.shape, ratio, inputs.device)
        tf = self.hparams.teacher_forcing
        if tf["mode"] == "exact":
            return self.scheduled_exact(inputs, truth, state)
        return self.scheduled_parallel(inputs, truth, state, tf["passes"])

    def _own_predictions(self, out: torch.Tensor) -> torch.Tensor:
        greedy = self.hparams.teacher_forcing["predictions"] == "greedy"
        return self.head.sample(out.detach(), greedy=greedy)

    def scheduled_parallel(
        self, inputs: torch.Tensor, truth: torch.Tensor, state: LSTMState, passes: int
    ) -> torch.Tensor:
        """Parallel scheduled sampling: a teacher-forced pass without grad, then `passes - 1`
        passes over inputs that mix the ground truth (where `truth`) with the previous pass's
        predictions; only the last pass has grad. With greedy predictions, no ground truth and
        passes = T this is a Jacobi fixed-point iteration and equals exact autoregressive decoding
        (each pass makes one more leading position exact)."""
        x = inputs
        with torch.no_grad():
            for _ in range(passes - 1):
                pred = self._own_predictions(self.decode(x, state)[0])
                x = torch.where(truth, inputs, torch.cat([inputs[:, :1], pred[:, :-1]], dim=1))
        return self.decode(x, state)[0]

    def scheduled_exact(
        self, inputs: torch.Tensor, truth: torch.Tensor, state: LSTMState
    ) -> torch.Tensor:
        """Step-by-step scheduled sampling (Bengio et al. 2015): a coin per step (`truth`)."""
        outs = []
        x_t = inputs[:, 0]
        for t in range(inputs.shape[1]):
            out_t, state = self.decode_step(x_t, state)
            outs.append(out_t)
            if t + 1 < inputs.shape[1]:
                x_t = torch.where(truth[:, t + 1], inputs[:, t + 1], self._own_predictions(out_t))
        return torch.stack(outs, dim=1)

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
        samples) by `n_samples`, decoding autoregressively one sample at a time.

        `decoding`: "sample" (softmax with `temperature`, optional nucleus `top_p`, inverse-CDF
        from `generator` uniforms) or "greedy" (argmax / the regression mean, which drifts to
        silence). Unset options take the model.decoding / temperature / top_p hparams.
        """
        hp = self.hparams
        greedy = choice(decoding or hp.decoding, DECODINGS, "decoding") == "greedy"
        temperature = number(
            hp.temperature if temperature is None else temperature, "temperature", low=0.0
        )
        top_p = hp.top_p if top_p is None else _top_p(top_p, "top_p")
        if prev.dim() != 2:
            raise ValueError(f"prev must be [batch, time], got shape {tuple(prev.shape)}")
        prev = prev[:, -self.context_len :].to(self.device, torch.float32)
        prev_tokens = self.head.tokens(prev)
        state = self.encode(prev_tokens)
        x_t = self.first_input(prev_tokens)
        tokens = []
        for _ in range(n_samples):
            out, state = self.decode_step(x_t, state)
            x_t = self.head.sample(
                out, temperature=temperature, greedy=greedy, top_p=top_p, generator=generator
            )
            tokens.append(x_t)
        if not tokens:
            return prev.new_zeros(prev.shape[0], 0)
        return self.head.audio(torch.stack(tokens, dim=1))
