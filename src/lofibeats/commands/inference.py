"""What generate and evaluate share: a checkpoint loaded for inference, and the inference knobs.

The config side is `conf/inference/default.yaml` (ckpt, device, threads, engine, seed,
creativity, options, the run dir) and `conf/sampling/default.yaml` (temperature, top_p,
decoding), both merged at the top level so users type `temperature=0.9`, not a group prefix.
Decoding knobs are inference settings, never model hyperparameters: a checkpoint that still
carries them (v0.1) is loaded and they are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lofibeats.cli import MOVED_KEYS
from lofibeats.data.datamodule import LofiDataModule
from lofibeats.errors import ConfigError
from lofibeats.generation.prime import data_config_for
from lofibeats.generation.stream import resolve_carry
from lofibeats.models.base import LofiModule
from lofibeats.models.checkpoint import module_from_checkpoint, read_checkpoint
from lofibeats.models.decoding import auto_beat_prior, auto_temperature, has_lookback
from lofibeats.models.sampling import Sampling, is_auto
from lofibeats.models.vseq2seq import VSeq2SeqModule
from lofibeats.runs import resolve_checkpoint
from lofibeats.validate import choice, merge_options, number, optional_number

DEVICES = ("cpu", "cuda", "auto")
# what `options.*` may hold: generate_long's own seam settings (null = the family's default)
LONGFORM_OPTIONS = {"crossfade": None, "fade": None}
# top-level keys that only a model with a latent z (vseq2seq) takes
LATENT_KEYS = ("creativity", "style_change_at", "style_target")


def pick_device(name: Any) -> torch.device:
    """`cpu`, `cuda` (error if absent) or `auto` (cuda when available)."""
    name = choice(name, DEVICES, "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: no CUDA device is visible; use device=cpu")
    return torch.device(name)


def load_for_inference(cfg: DictConfig) -> tuple[LofiModule, Path, Mapping[str, Any]]:
    """Resolve `cfg.ckpt` (`last` = newest under outputs/), load it on `cfg.device`, eval mode.

    Returns the module, its path and the data config to read primes and real audio from: the
    data the checkpoint was trained on, unless the command line sets any `data.*` key (then
    `cfg.data`). Also applies `cfg.threads` (null leaves torch's default of one per core).
    """
    if cfg.get("threads") is not None:
        torch.set_num_threads(number(cfg.threads, "threads", kind=int, low=1))
    path = resolve_checkpoint(str(cfg.ckpt), Path(cfg.paths.root_dir) / "outputs")
    device = pick_device(cfg.get("device", "cpu"))
    ckpt = read_checkpoint(path, map_location=device)
    module = module_from_checkpoint(ckpt, path, map_location=device)
    trained = ckpt.get("datamodule_hyper_parameters")
    data_cfg = cfg.data if given_on_command_line("data.") or not trained else trained
    return module, path, data_cfg


def given_on_command_line(prefix: str) -> bool:
    """Whether a command-line override sets a key starting with `prefix` (e.g. `data.`)."""
    if not HydraConfig.initialized():
        return False
    return any(o.lstrip("+~").startswith(prefix) for o in HydraConfig.get().overrides.task)


def val_datamodule(module: LofiModule, data_cfg: Mapping[str, Any]) -> LofiDataModule:
    """A prepared LofiDataModule over the data config, at the checkpoint's rate."""
    datamodule = LofiDataModule.from_config(data_config_for(module, data_cfg))
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule


def sampling_from(cfg: DictConfig, net: object = None) -> Sampling:
    """The decoding knobs (top-level `temperature`, `top_p`, `decoding`, `loop`, `beat_prior`),
    checked, with "auto" resolved for `net` (None: as for a model without a lookback or a
    plan)."""
    return Sampling.parse(
        cfg.get("temperature"),
        cfg.get("top_p"),
        cfg.get("decoding"),
        cfg.get("loop"),
        cfg.get("beat_prior"),
        lookback=has_lookback(net),
        model_temperature=auto_temperature(net),
        model_beat_prior=auto_beat_prior(net),
    )


def longform_options(cfg: DictConfig) -> dict[str, Any]:
    """`options.*` (crossfade, fade) without nulls; an unknown key is a ConfigError naming it,
    and a key that moved (`options.top_p` -> `top_p`) says where it went."""
    given = cfg.get("options") or {}
    for key in given:
        moved = MOVED_KEYS.get(f"options.{key}")
        if moved:
            raise ConfigError(f"options.{key} is now {moved}: give {moved}=<value>")
    options = merge_options(given, LONGFORM_OPTIONS, "options")
    return {key: value for key, value in options.items() if value is not None}


def carry_for(cfg: DictConfig, module: LofiModule, data_cfg: Mapping[str, Any]) -> str:
    """How a take's blocks connect: `carry` (auto | window | state), see `resolve_carry`."""
    return resolve_carry(cfg.get("carry", "auto"), module, data_cfg.get("mode", "windows"))


def check_latent_keys(cfg: DictConfig, module: LofiModule) -> None:
    """A ConfigError if a key of `LATENT_KEYS` is set for a model without a latent z."""
    if isinstance(module, VSeq2SeqModule):
        return
    given = [key for key in LATENT_KEYS if cfg.get(key) is not None]
    if given:
        raise ConfigError(
            f"{given[0]}: only vseq2seq models have a latent z; this checkpoint is a "
            f"{module.family} model (drop {given[0]})"
        )


def prime_seconds(cfg: DictConfig, module: LofiModule, shortest: float) -> float | None:
    """`prime_seconds` checked: `auto` is the model's context (what it reads back: the plan's
    4 s), or `shortest` where that is longer; null (a file prime only) the whole file."""
    value = cfg.get("prime_seconds")
    if is_auto(value):
        return max(shortest, module.context_len / module.sample_rate)
    return optional_number(value, "prime_seconds", low=0, low_open=True)


def creativity_from(cfg: DictConfig) -> float | None:
    """`creativity` checked (>= 0); None = the vseq2seq family's default."""
    value = cfg.get("creativity")
    return None if value is None else number(value, "creativity", low=0.0)
