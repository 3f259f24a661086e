"""Each family's model config, checked once and turned into plain values.

`<Family>Config.parse(**model_config)` is the single place a family's `model.*` values are
validated (through `lofibeats.validate`, so every error names its key); the result builds the
plain `nn.Module` network and is what a checkpoint stores as its hyperparameters
(`as_hparams()`: plain ints, floats, strings, lists and dicts, loadable with weights_only=True).
Decoding knobs (temperature, top_p, decoding, creativity) are not model config: they belong to
inference (`conf/inference`), see `lofibeats.models.sampling`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lofibeats.errors import ConfigError
from lofibeats.models.frame_tier import check_frame_size
from lofibeats.models.gan_losses import ADV_LOSSES
from lofibeats.models.heads import HEADS
from lofibeats.models.lookback import RECALL_SAMPLES
from lofibeats.models.sampling import DECODINGS
from lofibeats.units import to_samples
from lofibeats.validate import choice, merge_options, number, numbers

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
KL_DEFAULTS: dict[str, Any] = {
    "schedule": "linear",  # constant | linear | logistic | cyclical (see kl_schedules)
    "start": 0.0,
    "end": 1.0,  # beta max
    "steps": 2000,
    "cycles": 4,  # cyclical
    "ratio": 0.5,  # cyclical: share of each cycle spent ramping
    "sharpness": 10.0,  # logistic slope over `steps`
    "free_bits": 0.05,  # nats per dimension (0 = off)
}
RENDERERS = ("grains", "samples")  # what plays a plan (PlanConfig.render)
#: keys that checkpoints of lofibeats 0.1 stored as model hyperparameters and that are no longer
#: model config (decoding knobs moved to inference, z-sample logging to a callback)
RETIRED_KEYS = ("decoding", "temperature", "top_p", "creativity", "log_z_samples", "log_z_seconds")
#: keys renamed after checkpoint format 2, by family (old name: new name): the plan's MLP width
#: took `hidden`, the name every family's main width goes by, from its sample renderer
RENAMED_KEYS = {"plan": {"hidden": "render_hidden", "plan_hidden": "hidden"}}


def _rate_and_lengths(values: dict[str, Any]) -> tuple[int, int, int]:
    sr = number(values.pop("sr"), "data.sr", kind=int, low=1)
    prev = to_samples(values.pop("prev_len_max"), sr, "data.prev_len_max")
    nxt = to_samples(values.pop("next_len"), sr, "data.next_len")
    return sr, prev, nxt


def _unknown(cls: type, values: dict[str, Any]) -> None:
    family = values.get("family", cls.family)
    if family != cls.family:
        raise ConfigError(f"model.family={family!r}: this module is {cls.family!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    extra = sorted(set(values) - set(known) - {"family", "_target_"})
    if extra:
        raise ConfigError(
            f"model.{extra[0]}: unknown key for a {cls.family} model; known keys: {', '.join(known)}"
        )


@dataclass(frozen=True)
class ModelConfig:
    """What every family has: its rate and the lengths of `prev` it reads and `next` it writes."""

    family: ClassVar[str] = ""
    sr: int = 8000
    prev_len_max: int = 2048
    next_len: int = 512

    def as_hparams(self) -> dict[str, Any]:
        """The plain dict a checkpoint stores (with `family`, which picks the class to rebuild)."""
        return {"family": self.family, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Seq2SeqConfig(ModelConfig):
    family: ClassVar[str] = "seq2seq"
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.0
    head: str = "mulaw"
    embed_dim: int = 64
    regression_loss: str = "mse"
    learned_init: bool = True
    forget_bias: float = 1.0
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    teacher_forcing: dict[str, Any] = field(default_factory=lambda: dict(TEACHER_FORCING_DEFAULTS))
    frame_size: int = 1
    sample_hidden: int = 64
    top_frame_size: int | None = None  # the encoder's frame (a slow top tier); None = frame_size
    input_dropout: float = 0.0  # P(a teacher-forced decoder input becomes silence), training only
    input_noise: float = 0.0  # std of gaussian noise on teacher-forced inputs (audio units)
    lookback: int | str = 0  # farthest lag the decoder recalls from (frame models; 0 = off)
    lookback_min: int | str = "0.5s"  # nearest lag it recalls from
    lookback_window: int | str = "0.5s"  # the audio it matches to find the lag
    lookback_hop: int | str = "16ms"  # how often it searches again (whole frames)

    @classmethod
    def parse(cls, **given: Any) -> Seq2SeqConfig:
        """The checked config of `model.*` values (lengths may be durations such as "0.25s")."""
        values = {**dataclasses.asdict(cls()), **given}
        _unknown(cls, values)
        return cls(**cls._checked(values))

    @classmethod
    def _checked(cls, values: dict[str, Any]) -> dict[str, Any]:
        values.pop("family", None)
        values.pop("_target_", None)
        sr, prev_len_max, next_len = _rate_and_lengths(values)
        frame_size = number(values["frame_size"], "model.frame_size", kind=int, low=1)
        check_frame_size(frame_size, next_len)
        top = values["top_frame_size"]
        top = frame_size if top is None else number(top, "model.top_frame_size", kind=int, low=1)
        if next_len % top:
            raise ConfigError(
                f"model.top_frame_size={top} does not divide data.next_len={next_len}: make "
                "data.next_len a multiple of it (a stream encodes each new chunk in whole frames)"
            )
        return {
            **values,
            **_lookback(values, sr, frame_size, prev_len_max),
            "sr": sr,
            "prev_len_max": prev_len_max,
            "next_len": next_len,
            "hidden": number(values["hidden"], "model.hidden", kind=int, low=1),
            "layers": number(values["layers"], "model.layers", kind=int, low=1),
            "dropout": number(
                values["dropout"], "model.dropout", low=0.0, high=1.0, high_open=True
            ),
            "head": choice(values["head"], HEADS, "model.head"),
            "embed_dim": number(values["embed_dim"], "model.embed_dim", kind=int, low=1),
            "regression_loss": choice(
                values["regression_loss"], ("mse", "l1"), "model.regression_loss"
            ),
            "learned_init": bool(values["learned_init"]),
            "forget_bias": number(values["forget_bias"], "model.forget_bias"),
            "lr": number(values["lr"], "model.lr", low=0.0),
            "weight_decay": number(values["weight_decay"], "model.weight_decay", low=0.0),
            "warmup_steps": number(values["warmup_steps"], "model.warmup_steps", kind=int, low=0),
            "teacher_forcing": _teacher_forcing(values["teacher_forcing"]),
            "frame_size": frame_size,
            "top_frame_size": top,
            "input_dropout": number(
                values["input_dropout"], "model.input_dropout", low=0.0, high=1.0, high_open=True
            ),
            "input_noise": number(values["input_noise"], "model.input_noise", low=0.0),
            "sample_hidden": number(
                values["sample_hidden"], "model.sample_hidden", kind=int, low=1
            ),
        }


def _lookback(
    values: dict[str, Any], sr: int, frame_size: int, prev_len_max: int
) -> dict[str, Any]:
    """The checked lookback keys, in samples (lookback 0: off, the others kept as given)."""
    if values["lookback"] in (0, "0", None):
        return {"lookback": 0}
    far = to_samples(values["lookback"], sr, "model.lookback")
    near = to_samples(values["lookback_min"], sr, "model.lookback_min")
    window = to_samples(values["lookback_window"], sr, "model.lookback_window")
    hop = to_samples(values["lookback_hop"], sr, "model.lookback_hop")
    if frame_size == 1:
        raise ConfigError(
            "model.lookback needs a frame model: set model.frame_size (e.g. 16) or model.lookback=0"
        )
    if frame_size > RECALL_SAMPLES:
        raise ConfigError(
            f"model.lookback with model.frame_size={frame_size}: a frame copies from the "
            f"{RECALL_SAMPLES} samples it recalls; use a frame size of at most {RECALL_SAMPLES}"
        )
    if values["head"] != "mulaw":
        raise ConfigError(
            f"model.lookback needs model.head=mulaw (it copies classes), not {values['head']!r}"
        )
    if near < max(frame_size, RECALL_SAMPLES) or near >= far:
        raise ConfigError(
            f"model.lookback_min={values['lookback_min']!r} ({near} samples): use at least "
            f"{max(frame_size, RECALL_SAMPLES)} samples and less than model.lookback ({far})"
        )
    if far > prev_len_max:
        raise ConfigError(
            f"model.lookback={values['lookback']!r} ({far} samples) reaches past "
            f"data.prev_len_max ({prev_len_max}): the model can only recall what prev holds; "
            "raise data.prev_len_max or lower model.lookback"
        )
    if hop % frame_size:
        raise ConfigError(
            f"model.lookback_hop={values['lookback_hop']!r} ({hop} samples): use a multiple of "
            f"model.frame_size ({frame_size}); searches happen between frames"
        )
    return {"lookback": far, "lookback_min": near, "lookback_window": window, "lookback_hop": hop}


def _teacher_forcing(given: Any) -> dict[str, Any]:
    key = "model.teacher_forcing"
    tf = merge_options(given, TEACHER_FORCING_DEFAULTS, key)
    tf["mode"] = choice(tf["mode"], ("parallel", "exact"), f"{key}.mode")
    tf["passes"] = number(tf["passes"], f"{key}.passes", kind=int, low=2)
    for name in ("start", "end"):
        tf[name] = number(tf[name], f"{key}.{name}", low=0.0)
    tf["steps"] = number(tf["steps"], f"{key}.steps", kind=int, low=1)
    tf["k"] = number(tf["k"], f"{key}.k", low=1.0)
    tf["predictions"] = choice(tf["predictions"], DECODINGS, f"{key}.predictions")
    return tf


@dataclass(frozen=True)
class VSeq2SeqConfig(Seq2SeqConfig):
    family: ClassVar[str] = "vseq2seq"
    latent_dim: int = 16
    z_every_step: bool = True
    kl: dict[str, Any] = field(default_factory=lambda: dict(KL_DEFAULTS))
    input_dropout: float = 0.1

    @classmethod
    def _checked(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = super()._checked(values)
        kl = merge_options(values["kl"], KL_DEFAULTS, "model.kl")
        for name in ("start", "end", "free_bits"):
            kl[name] = number(kl[name], f"model.kl.{name}", low=0.0)
        for name in ("ratio", "sharpness"):
            kl[name] = number(kl[name], f"model.kl.{name}")
        for name in ("steps", "cycles"):
            kl[name] = number(kl[name], f"model.kl.{name}", kind=int, low=1)
        return {
            **values,
            "latent_dim": number(values["latent_dim"], "model.latent_dim", kind=int, low=1),
            "z_every_step": bool(values["z_every_step"]),
            "kl": kl,
        }


@dataclass(frozen=True)
class GanConfig(ModelConfig):
    family: ClassVar[str] = "gan"
    hidden: int = 64
    layers: int = 3
    ratios: list[int] = field(default_factory=lambda: [4, 4, 4])
    noise_dim: int = 32
    d_context: int | str | None = None  # samples of prev D sees; None = next_len
    d_channels: int = 16
    d_max_channels: int = 128
    d_layers: int = 3
    d_scales: int = 3
    mpd_periods: list[int] = field(default_factory=list)
    phase_shuffle: int = 2
    spectral_norm: bool = False
    adv_loss: str = "hinge"
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    stft_weight: float = 2.0
    dc_weight: float = 10.0
    gp_weight: float = 10.0
    adv_warmup_steps: int = 1000
    n_critic: int = 1
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    grad_clip: float | None = 1.0

    @classmethod
    def parse(cls, **given: Any) -> GanConfig:
        """The checked config of `model.*` values (lengths may be durations such as "0.25s")."""
        values = {**dataclasses.asdict(cls()), **given}
        _unknown(cls, values)
        values.pop("family", None)
        values.pop("_target_", None)
        sr, prev_len_max, next_len = _rate_and_lengths(values)
        ratios = numbers(values["ratios"], "model.ratios", kind=int, low=2)
        if not ratios:
            raise ConfigError("model.ratios=[]: give at least one factor, e.g. [4, 4, 4]")
        d_scales = number(values["d_scales"], "model.d_scales", kind=int, low=0)
        mpd_periods = numbers(values["mpd_periods"] or [], "model.mpd_periods", kind=int, low=2)
        if d_scales == 0 and not mpd_periods:
            raise ConfigError("model.d_scales=0 and model.mpd_periods=[]: D needs at least one")
        betas = numbers(values["betas"] or [], "model.betas", low=0.0, high=1.0, high_open=True)
        if len(betas) != 2:
            raise ConfigError(
                f"model.betas={values['betas']!r}: give two Adam betas in [0, 1), e.g. [0.5, 0.9]"
            )
        d_context = values["d_context"]

        def count(name: str, low: int) -> int:
            return number(values[name], f"model.{name}", kind=int, low=low)

        def weight(name: str) -> float:
            return number(values[name], f"model.{name}", low=0.0)

        return cls(
            sr=sr,
            prev_len_max=prev_len_max,
            next_len=next_len,
            hidden=count("hidden", 1),
            layers=count("layers", 1),
            ratios=ratios,
            noise_dim=count("noise_dim", 1),
            d_context=next_len
            if d_context is None
            else to_samples(d_context, sr, "model.d_context"),
            d_channels=count("d_channels", 4),
            d_max_channels=count("d_max_channels", 4),
            d_layers=count("d_layers", 1),
            d_scales=d_scales,
            mpd_periods=mpd_periods,
            phase_shuffle=count("phase_shuffle", 0),
            spectral_norm=bool(values["spectral_norm"]),
            adv_loss=choice(values["adv_loss"], ADV_LOSSES, "model.adv_loss"),
            adv_weight=weight("adv_weight"),
            fm_weight=weight("fm_weight"),
            stft_weight=weight("stft_weight"),
            dc_weight=weight("dc_weight"),
            gp_weight=weight("gp_weight"),
            adv_warmup_steps=count("adv_warmup_steps", 0),
            n_critic=count("n_critic", 1),
            lr_g=weight("lr_g"),
            lr_d=weight("lr_d"),
            betas=betas,
            grad_clip=None if values["grad_clip"] is None else weight("grad_clip"),
        )


@dataclass(frozen=True)
class PlanConfig(ModelConfig):
    family: ClassVar[str] = "plan"
    hop: int | str = "16ms"  # samples per plan frame
    n_mels: int = 80
    codes: int = 256  # codebook size
    codebook_frames: int = 100_000  # training frames the codebook is fitted on
    near: int = 2  # the plan reads the codes 1..near frames back ...
    beats: int = 4  # ... and 1..beats beat periods back
    period_min: int | str = "0.3s"  # the beat periods a prime's is measured among
    period_max: int | str = "1.0s"
    plan_width: int = 96  # the embedding of each code the plan reads
    hidden: int = 768  # the plan MLP's width ...
    layers: int = 2  # ... and its hidden layers
    plan_dropout: float = 0.0
    tempo_stretch: float = 1.0  # the plan trains on frames re-timed up to this much (1 = off)
    render: str = "grains"  # what plays the plan: "grains" of training audio, or "samples"
    grains: int = 32  # grains kept per code (render="grains") ...
    grain_memory: int = 64  # ... none replayed within this many frames
    grain_shift: int | str = "4ms"  # how far a join may move a grain to meet the one before
    render_hidden: int = 256  # the sample renderer's width (render="samples")
    render_past: int = 256  # samples the renderer reads before the one it predicts
    render_rows: int = 16  # windows per batch the renderer trains on ...
    render_len: int | str = 2048  # ... and samples of each
    lr: float = 1e-3
    weight_decay: float = 0.0

    @classmethod
    def parse(cls, **given: Any) -> PlanConfig:
        """The checked config of `model.*` values (lengths may be durations such as "16ms")."""
        values = {**dataclasses.asdict(cls()), **given}
        _unknown(cls, values)
        values.pop("family", None)
        values.pop("_target_", None)
        sr, prev_len_max, next_len = _rate_and_lengths(values)

        def count(name: str, low: int = 1) -> int:
            return number(values[name], f"model.{name}", kind=int, low=low)

        hop = to_samples(values["hop"], sr, "model.hop")
        if hop < 16:
            raise ConfigError(f"model.hop={values['hop']!r} ({hop} samples): use at least 16")
        period_min = to_samples(values["period_min"], sr, "model.period_min")
        period_max = to_samples(values["period_max"], sr, "model.period_max")
        shortest, longest = period_frames(period_min, period_max, hop)
        if not 2 <= shortest < longest:
            raise ConfigError(
                f"model.period_min={values['period_min']!r} and model.period_max="
                f"{values['period_max']!r}: give 0.3s and 1.0s or similar (min below max, "
                f"at least two frames of {hop} samples)"
            )
        beats = count("beats")
        reach = (beats * longest + 1) * hop  # the farthest code a plan target reads
        if prev_len_max < reach:
            raise ConfigError(
                f"data.prev_len_max={prev_len_max} samples: the plan reads {beats} beats of up "
                f"to model.period_max back, so prev must hold at least {reach} samples "
                f"({reach / sr:.2f} s): set data.prev_len_min and data.prev_len_max to "
                f"{math.ceil(reach / sr)}s, as model=plan does unless they are overridden"
            )
        render = choice(values["render"], RENDERERS, "model.render")
        render_len = to_samples(values["render_len"], sr, "model.render_len")
        if render_len % hop:
            raise ConfigError(
                f"model.render_len={values['render_len']!r}: use a multiple of model.hop ({hop})"
            )
        # plan targets need a frame past the renderer's reach; a sample renderer, its samples too
        least = (render_len if render == "samples" else hop) + 2 * hop
        if next_len % hop or next_len < least:
            raise ConfigError(
                f"data.next_len={next_len}: use a multiple of model.hop ({hop} samples) of at "
                f"least {least} samples"
                + (" (model.render_len + 2 frames)" if render == "samples" else "")
            )
        return cls(
            sr=sr,
            prev_len_max=prev_len_max,
            next_len=next_len,
            hop=hop,
            n_mels=count("n_mels"),
            codes=count("codes", 2),
            codebook_frames=count("codebook_frames"),
            near=count("near"),
            beats=beats,
            period_min=period_min,
            period_max=period_max,
            plan_width=count("plan_width"),
            hidden=count("hidden"),
            layers=count("layers"),
            plan_dropout=number(
                values["plan_dropout"], "model.plan_dropout", low=0.0, high=1.0, high_open=True
            ),
            tempo_stretch=number(values["tempo_stretch"], "model.tempo_stretch", low=1.0),
            render=render,
            grains=count("grains"),
            grain_memory=count("grain_memory", 0),
            grain_shift=0
            if values["grain_shift"] in (0, "0")
            else to_samples(values["grain_shift"], sr, "model.grain_shift"),
            render_hidden=count("render_hidden"),
            render_past=count("render_past"),
            render_rows=count("render_rows"),
            render_len=render_len,
            lr=number(values["lr"], "model.lr", low=0.0),
            weight_decay=number(values["weight_decay"], "model.weight_decay", low=0.0),
        )


def period_frames(period_min: int, period_max: int, hop: int) -> tuple[int, int]:
    """The beat periods (samples) a plan measures among, as whole frames of `hop` samples."""
    return -(-period_min // hop), period_max // hop
