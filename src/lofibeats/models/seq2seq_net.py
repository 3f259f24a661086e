"""The seq2seq network: LSTM encoder over `prev`, LSTM decoder over `next`, a dense output head.

Batches are `(prev, next)` float tensors in [-1, 1], [B, Tp] and [B, Tn]; `next` follows `prev`.
The decoder's input at step t is the sample before the one it predicts: the last `prev` sample at
t = 0, then `next[t - 1]` (teacher forcing) or the model's own prediction (scheduled sampling).

With `frame_size` = k > 1 (SampleRNN's two tiers, see `frame_tier`) the LSTMs step once per
frame of k samples, reading the previous frame, and a sample-level tier predicts each sample from
its frame's LSTM output and the k samples before it. The same methods serve both designs: the
decoder inputs are then the k samples before `next` followed by `next[:-1]` (Tn + k - 1 tokens):
frame j reads inputs[jk : jk + k], and target t's sample window is inputs[t : t + k].

With `top_frame_size` = K > k the encoder is a slow top tier: it reads `prev` in frames of K
samples (4 s at 16 kHz with K = 256: 250 steps), so seconds of context cost few LSTM steps, and
in a stream it moves on over each generated chunk in a handful of steps.

With `lookback` > 0 (frame models) each decoder frame also reads a recall of what followed the
moments of the past that sound like now (`lookback.Lookback`): the LSTM with its input, the
sample tier with the frame's output. Training computes it over the teacher-forced stream
(`recall`), generation frame by frame from the past frames a `DecodeStart` carries.

A plain `nn.Module` built from a `Seq2SeqConfig`; training (teacher forcing, scheduled sampling,
losses) is `Seq2SeqModule`'s, generation the decoding backends' (`describe` via `start`).
"""

from __future__ import annotations

import torch
from torch import nn

from lofibeats.models.configs import Seq2SeqConfig
from lofibeats.models.decoding import DecoderWeights, DecodeStart, EncoderWeights
from lofibeats.models.frame_tier import SampleTier, frame_values, left_pad
from lofibeats.models.heads import build_head
from lofibeats.models.lookback import CopyHead, Lookback
from lofibeats.models.networks import Decoder, Encoder, InputEmbedding, LSTMState


class Seq2SeqNet(nn.Module):
    """Embedding, encoder, decoder, head and (frame models) the sample tier of one config."""

    def __init__(self, config: Seq2SeqConfig, cond_dim: int = 0) -> None:
        super().__init__()
        self.config = config
        framed = config.frame_size > 1
        self.head = build_head(
            config.head, config.sample_hidden if framed else config.hidden, config.regression_loss
        )
        self.embed = InputEmbedding(config.embed_dim, self.head.n_classes)
        self.lookback = (
            Lookback(
                config.frame_size,
                config.lookback_min,
                config.lookback,
                config.lookback_window,
                config.lookback_hop,
            )
            if config.lookback
            else None
        )
        recall_dim = 0 if self.lookback is None else self.lookback.out_dim
        self.copy = (
            None if self.lookback is None else CopyHead(config.sample_hidden, self.head.n_classes)
        )
        self.encoder = Encoder(
            self.encoder_input_dim,
            config.hidden,
            config.layers,
            config.dropout,
            config.learned_init,
            config.forget_bias,
        )
        self.decoder = Decoder(
            self.lstm_input_dim + recall_dim,
            config.hidden,
            config.layers,
            config.dropout,
            cond_dim=cond_dim,
            forget_bias=config.forget_bias,
        )
        self.sample_tier = (
            SampleTier(
                config.frame_size,
                config.hidden + recall_dim,
                config.embed_dim,
                config.sample_hidden,
            )
            if framed
            else None
        )

    @property
    def frame_size(self) -> int:
        """Samples per LSTM step (1: the sample-level design)."""
        return self.config.frame_size

    @property
    def top_frame_size(self) -> int:
        """Samples per encoder step: the decoder's frame, or a slower top tier's."""
        return self.config.top_frame_size or self.frame_size

    @property
    def lstm_input_dim(self) -> int:
        """Input width of the decoder: the sample embedding, or one value per sample of a frame."""
        return self.config.embed_dim if self.frame_size == 1 else self.frame_size

    @property
    def encoder_input_dim(self) -> int:
        return self.config.embed_dim if self.top_frame_size == 1 else self.top_frame_size

    # ----------------------------------------------------------------- pieces
    def lstm_inputs(self, tokens: torch.Tensor, frame: int | None = None) -> torch.Tensor:
        """Tokens [B, T] -> LSTM inputs: embedded samples [B, T, E], or frames [B, T / k, k]
        of `frame` samples (default: the decoder's)."""
        k = self.frame_size if frame is None else frame
        if k == 1:
            return self.embed(tokens)
        values = frame_values(tokens, self.head.n_classes)
        return values.view(tokens.shape[0], tokens.shape[1] // k, k)

    def silence(self, batch: int, device: torch.device) -> torch.Tensor:
        """The silence token, [batch]."""
        return self.head.tokens(torch.zeros(batch, device=device))

    def encoder_state(self, prev_tokens: torch.Tensor, state: LSTMState | None = None) -> LSTMState:
        """The encoder's final (h, c) over prev tokens [B, Tp], continuing from `state` (None: its
        initial state), one step per `top_frame_size` samples. Frames: a fresh encoder
        left-pads with silence to whole frames; one that continues must be given whole frames."""
        k = self.top_frame_size
        if k > 1 and prev_tokens.shape[1] % k:
            if state is not None:
                raise ValueError("a continuing frame encoder needs whole frames")
            if prev_tokens.shape[1] > 0:
                prev_tokens = left_pad(prev_tokens, k, self.silence(1, prev_tokens.device))
        return self.encoder(self.lstm_inputs(prev_tokens, k), state)

    def context(self, prev_tokens: torch.Tensor) -> torch.Tensor:
        """The k tokens before `next` [B, k]: the end of `prev`, left-padded with silence (an
        empty `prev` gives silence)."""
        silence = self.silence(1, prev_tokens.device)
        return left_pad(prev_tokens[:, -self.frame_size :], self.frame_size, silence)

    def past_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T] -> the frames [B, F, k] of their values that a lookback reads,
        left-padded with silence to whole frames, as the decoder's frames are aligned."""
        k = self.frame_size
        padded = left_pad(tokens, k, self.silence(1, tokens.device))
        return frame_values(padded, self.head.n_classes).view(tokens.shape[0], -1, k)

    def recall(self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor | None:
        """The lookback's recall for each decoder frame of teacher-forced `next_tokens`
        [B, F, R] (None without a lookback)."""
        if self.lookback is None:
            return None
        past = self.past_frames(prev_tokens)
        k = self.frame_size
        future = frame_values(next_tokens, self.head.n_classes).view(past.shape[0], -1, k)
        return self.lookback.recall(torch.cat([past, future], dim=1), past.shape[1])

    def lookback_history(
        self, past: torch.Tensor | None, tokens: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The past frames a decode's lookback starts from: `past` [B, F, k] (None: none) then
        the frames of `tokens`, cropped to what the lookback reads; None without one."""
        if self.lookback is None:
            return None
        if tokens is not None:
            k = self.frame_size
            new = frame_values(tokens, self.head.n_classes).view(tokens.shape[0], -1, k)
            past = new if past is None else torch.cat([past, new], dim=1)
        return past[:, -self.lookback.history_frames :]

    def decoder_inputs(self, prev_tokens: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder inputs [B, Tn + k - 1]: the k tokens before next, then
        next[:-1] (k = 1: the last prev token, then next[:-1])."""
        return torch.cat([self.context(prev_tokens), next_tokens[:, :-1]], dim=1)

    def decode(
        self,
        inputs: torch.Tensor,
        state: LSTMState,
        frames: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        recall: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LSTMState]:
        """Decoder input tokens [B, Tn + k - 1] -> (head outputs [B, Tn, ...], final state), one
        LSTM call. `frames` ([B, Tn]) replaces what the LSTM reads (default inputs[:, :Tn]):
        scheduled sampling feeds predictions there while the sample tier keeps `inputs`.
        `cond` is the decoder's conditioning ([B, C] or one per LSTM step), `recall` the
        lookback's per frame ([B, Tn / k, R], see `recall`)."""
        k = self.frame_size
        if frames is None:
            frames = inputs[:, : inputs.shape[1] - k + 1]
        x = self.lstm_inputs(frames)
        if self.lookback is not None:
            if recall is None:
                raise ValueError("a lookback decoder needs its recall (Seq2SeqNet.recall)")
            x = torch.cat([x, recall], dim=-1)
        h, state = self.decoder(x, state, cond)
        if self.sample_tier is None:
            return self.head(h), state
        if recall is None:
            return self.head(self.sample_tier(h, self.embed(inputs))), state
        features = self.sample_tier(torch.cat([h, recall], dim=-1), self.embed(inputs))
        centres = recall[..., :k].reshape(recall.shape[0], -1)  # each target's recalled value
        return self.copy.mix(self.head(features), features, centres), state

    def decode_step(
        self, x_t: torch.Tensor, state: LSTMState, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """One sample-level decoder step: input tokens [B] -> (head output, new state)."""
        h, state = self.decoder.step(self.embed(x_t), state, cond)
        return self.head(h), state

    # ----------------------------------------------------------------- describing a decode
    def decoder_weights(self) -> DecoderWeights:
        return DecoderWeights(
            self.embed, self.decoder, self.head, self.sample_tier, self.lookback, self.copy
        )

    def encoder_weights(self) -> EncoderWeights | None:
        """The sample-level encoder (None for a slow top tier, which reads frames)."""
        return EncoderWeights(self.embed, self.encoder.lstm) if self.top_frame_size == 1 else None

    def start(
        self, prev: torch.Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> DecodeStart:
        """Continue `prev` [B, T]: the encoder's final state starts the decoder."""
        prev_tokens = self.head.tokens(prev)
        memory = self.encoder_state(prev_tokens)
        past = self.lookback_history(self.past_frames(prev_tokens))
        return DecodeStart(memory, self.context(prev_tokens), memory=memory, past=past)

    def follow(
        self,
        start: DecodeStart,
        tokens: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        *,
        memory: LSTMState | None = None,
    ) -> DecodeStart:
        """The next block starts where training on consecutive windows (data.mode=stream) left
        the model: the encoder's running state moves on over the generated `tokens` (or is
        `memory`, moved by a fused encoder) and starts the decoder again."""
        if memory is None:
            memory = self.encoder_state(tokens, start.memory)
        past = self.lookback_history(start.past, tokens)
        return DecodeStart(memory, self.context(tokens), memory=memory, past=past)

    def extra_repr(self) -> str:
        return f"frame_size={self.frame_size}, top_frame_size={self.top_frame_size}"
