"""The seq2seq family's training recipe: teacher forcing, scheduled sampling, the loss.

The network (`Seq2SeqNet`: LSTM encoder over `prev`, LSTM decoder over `next`, a dense head,
optionally the frame tier) is a plain `nn.Module` in `seq2seq_net.py`; this LightningModule
trains it. The decoder reads the teacher-forced inputs (the sample before each target) with
probability `teacher_forcing` ratio per frame and the model's own predictions otherwise
(Bengio et al. 2015), in one of two modes: `parallel` (multi-pass) or `exact` (step by step).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lofibeats.models.base import LofiModule
from lofibeats.models.configs import Seq2SeqConfig
from lofibeats.models.networks import LSTMState
from lofibeats.models.sampling import Sampling
from lofibeats.models.schedules import StepSchedule
from lofibeats.models.seq2seq_net import Seq2SeqNet

NET_PREFIXES = ("embed.", "encoder.", "decoder.", "head.", "sample_tier.")


class Seq2SeqModule(LofiModule):
    """Trains a `Seq2SeqNet`; every argument is a plain config value (conf/model/seq2seq.yaml,
    checked by `Seq2SeqConfig`)."""

    config_class: ClassVar[type[Seq2SeqConfig]] = Seq2SeqConfig
    v01_net_prefixes = NET_PREFIXES
    config: Seq2SeqConfig
    net: Seq2SeqNet

    def __init__(self, **model_config: Any) -> None:
        super().__init__(**model_config)
        self.net = self.build_net()
        tf = self.config.teacher_forcing
        self.tf_schedule = StepSchedule(
            tf["schedule"], tf["start"], tf["end"], tf["steps"], tf["k"], "model.teacher_forcing"
        )
        self.carried: LSTMState | None = None  # data.mode=stream: the encoder state per row

    def build_net(self) -> Seq2SeqNet:
        return Seq2SeqNet(self.config)

    @property
    def frame_size(self) -> int:
        return self.config.frame_size

    def outputs(
        self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor, ratio: float = 1.0
    ) -> torch.Tensor:
        """Head outputs [B, Tn, ...] for predicting `next_tokens` (see `teacher_forced`)."""
        inputs = self.net.decoder_inputs(prev_tokens, next_tokens)
        recall = self.net.recall(prev_tokens, next_tokens)
        return self.teacher_forced(
            inputs, self.net.encoder_state(prev_tokens), ratio, recall=recall
        )

    def carried_memory(self, reset: torch.Tensor | None) -> LSTMState | None:
        """The encoder state each row carries from the previous batch (data.mode=stream; truncated
        backpropagation: detached), its initial state where the row restarted (`reset`)."""
        if reset is None or self.carried is None or self.carried[0].shape[1] != reset.shape[0]:
            return None
        h0, c0 = self.net.encoder.initial_state(reset.shape[0])
        keep = ~reset.to(h0.device).view(1, -1, 1)
        return torch.where(keep, self.carried[0], h0), torch.where(keep, self.carried[1], c0)

    def encode_carried(self, prev_tokens: torch.Tensor, reset: torch.Tensor | None) -> LSTMState:
        """The encoder state after `prev`: from scratch (windows), or (data.mode=stream, `reset`
        given) going on from what each row carried, which it then carries on, detached."""
        state = self.net.encoder_state(prev_tokens, self.carried_memory(reset))
        if reset is not None:
            self.carried = (state[0].detach(), state[1].detach())
        return state

    # ----------------------------------------------------------------- teacher forcing
    def truth_mask(self, shape: torch.Size, ratio: float, device: torch.device) -> torch.Tensor:
        """Bernoulli(`ratio`) coins over the LSTM's input tokens [B, Tn], one per frame, True =
        feed the ground truth; frame 0 is always True (it reads the known end of prev).
        Drawn from the global RNG."""
        k = self.frame_size
        truth = torch.rand((shape[0], shape[1] // k), device=device) < ratio
        truth[:, 0] = True
        return truth.repeat_interleave(k, dim=1) if k > 1 else truth

    def teacher_forced(
        self,
        inputs: torch.Tensor,
        state: LSTMState,
        ratio: float = 1.0,
        cond: torch.Tensor | None = None,
        recall: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Head outputs [B, Tn, ...] for decoder `inputs` from `state`, feeding the LSTM the
        ground truth with probability `ratio` per frame and the model's own predictions
        otherwise (model.teacher_forcing.mode: parallel or exact). Ratio 1 is one LSTM call.
        `cond` [B, C] is the decoder's conditioning (vseq2seq's z), `recall` the lookback's
        (over the ground truth, also where the LSTM reads its own predictions)."""
        if ratio >= 1.0:
            return self.net.decode(inputs, state, cond=cond, recall=recall)[0]
        n = inputs.shape[1] - self.frame_size + 1
        truth = self.truth_mask((inputs.shape[0], n), ratio, inputs.device)
        tf = self.config.teacher_forcing
        if tf["mode"] == "exact":
            return self.scheduled_exact(inputs, truth, state, cond, recall)
        return self.scheduled_parallel(inputs, truth, state, tf["passes"], cond, recall)

    def _own_predictions(self, out: torch.Tensor) -> torch.Tensor:
        decoding = self.config.teacher_forcing["predictions"]
        return self.net.head.sample(out.detach(), Sampling(decoding=decoding))

    def scheduled_parallel(
        self,
        inputs: torch.Tensor,
        truth: torch.Tensor,
        state: LSTMState,
        passes: int,
        cond: torch.Tensor | None = None,
        recall: torch.Tensor | None = None,
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
                pred = self._own_predictions(self.net.decode(inputs, state, x, cond, recall)[0])
                fed = torch.cat([truth_frames[:, :k], pred[:, :-k]], dim=1)
                x = torch.where(truth, truth_frames, fed)
        return self.net.decode(inputs, state, x, cond, recall)[0]

    def scheduled_exact(
        self,
        inputs: torch.Tensor,
        truth: torch.Tensor,
        state: LSTMState,
        cond: torch.Tensor | None = None,
        recall: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Step-by-step scheduled sampling (Bengio et al. 2015): a coin per step (`truth`), or
        per frame for frame models (one LSTM step, then the frame's sample tier in parallel)."""
        k, n = self.frame_size, truth.shape[1]
        outs = []
        x = inputs[:, :k]
        for t in range(0, n, k):
            if k == 1:
                out, state = self.net.decode_step(x[:, 0], state, cond)
                out = out.unsqueeze(1)
            else:
                frame_recall = None if recall is None else recall[:, t // k : t // k + 1]
                out, state = self.net.decode(
                    inputs[:, t : t + 2 * k - 1], state, x, cond, frame_recall
                )
            outs.append(out)
            if t + k < n:
                own = self._own_predictions(out)
                x = torch.where(truth[:, t + k : t + 2 * k], inputs[:, t + k : t + 2 * k], own)
        return torch.cat(outs, dim=1)

    def corrupt_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """In training mode: gaussian noise (`input_noise`, audio units) on the teacher-forced
        inputs, then each replaced by silence with probability `input_dropout`, so the decoder
        cannot just copy its inputs and must lean on what the encoder (vseq2seq: z) tells it,
        and learns to cope with imperfect inputs like its own samples. Identity in eval mode."""
        noise, dropout = self.config.input_noise, self.config.input_dropout
        if not self.training or (noise == 0 and dropout == 0):
            return inputs
        head = self.net.head
        audio = head.audio(inputs)
        if noise > 0:
            audio = (audio + noise * torch.randn_like(audio)).clamp(-1.0, 1.0)
        if dropout > 0:
            audio = audio.masked_fill(torch.rand_like(audio) < dropout, 0.0)
        return head.tokens(audio)

    # ----------------------------------------------------------------- Lightning hooks
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int):
        """A (prev, next) batch, or (prev, next, reset) in data.mode=stream: then the encoder
        goes on from the state each row carried out of the previous batch."""
        prev, nxt, *stream = batch
        ratio = self.tf_schedule.value()
        head = self.net.head
        prev_tokens, next_tokens = head.tokens(prev), head.tokens(nxt)
        state = self.encode_carried(prev_tokens, stream[0] if stream else None)
        inputs = self.corrupt_inputs(self.net.decoder_inputs(prev_tokens, next_tokens))
        recall = self.net.recall(prev_tokens, next_tokens)
        out = self.teacher_forced(inputs, state, ratio, recall=recall)
        loss = head.loss(out, next_tokens)
        self.tf_schedule.advance()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tf_ratio", ratio)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        prev, nxt = batch
        head = self.net.head
        next_tokens = head.tokens(nxt)
        out = self.outputs(head.tokens(prev), next_tokens, 1.0)
        bits = head.nll_bits(out, next_tokens)
        if self.config.head == "mulaw":
            loss = bits
        else:
            loss = head.loss(out, next_tokens)
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
        hp = self.config
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.warmup_steps == 0:
            return opt
        warmup = hp.warmup_steps

        def linear_warmup(step: int) -> float:
            return min(1.0, (step + 1) / warmup)

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
