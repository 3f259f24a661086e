"""The plan family's render loop in the C kernel (`lofi_render` in csrc/lstm_engine.c).

`plan_net.render_reference` runs the renderer sample by sample in PyTorch, a dozen small ops per
sample; `render_loop_for` returns a loop with its signature and results that runs a whole block
per kernel call instead: the renderer's three matrices packed into panels once (`pack_panels`),
the past kept in a ring per row (W_past read once per 16-sample tile, not once per sample),
and the same inverse-CDF draw from the same uniforms. Tokens
match the reference's except where a uniform lands within float32 rounding of a CDF step (then
the rows go their own way from there; tests/test_render_kernel.py).
"""

from __future__ import annotations

import ctypes

import torch

from lofibeats.errors import ConfigError
from lofibeats.generation.backend_c import _check, _ptr, pack_panels, pad_last, padded
from lofibeats.generation.kernel import RendererSpec, kernel_switched_off, load_kernel
from lofibeats.models.plan_net import (
    RENDER_TEMPERATURE,
    Renderer,
    RenderLoop,
    companded,
    render_reference,
)
from lofibeats.validate import choice

ENGINES = ("auto", "fused", "reference")  # engine.ENGINES (engine.py imports this module)
FUSED_NAME = "fused (C kernel)"


class CRenderLoop:
    """`render_reference` in the kernel for one renderer, its weights copied at construction
    (build a new loop after they change); CPU, float32."""

    name = FUSED_NAME

    def __init__(self, lib: ctypes.CDLL, renderer: Renderer) -> None:
        self.lib, self.renderer = lib, renderer
        mix = renderer.mix[1]
        hidden, past = renderer.past.out_features, renderer.past_len
        n_classes = renderer.out.out_features
        n_hidden, n_pad = padded(hidden), padded(n_classes)
        with torch.no_grad():
            weights = [
                w.detach().to(torch.float32).T
                for w in (renderer.past.weight, mix.weight, renderer.out.weight)
            ]
            self.past_weight, self.mix_weight, self.out_weight = map(pack_panels, weights)
            self.past_bias = pad_last(renderer.past.bias.detach().float(), n_hidden)
            self.mix_bias = pad_last(mix.bias.detach().float(), n_hidden)
            self.out_bias = pad_last(renderer.out.bias.detach().float(), n_pad)
            self.levels = companded(torch.arange(n_classes)).contiguous()
        self.scale = 1.0 / RENDER_TEMPERATURE  # rounded to float32, as torch rounds it
        self.spec = RendererSpec(
            past,
            hidden,
            n_hidden,
            n_classes,
            n_pad,
            renderer.hop,
            *(
                _ptr(t)
                for t in (
                    self.past_weight,
                    self.past_bias,
                    self.mix_weight,
                    self.mix_bias,
                    self.out_weight,
                    self.out_bias,
                    self.levels,
                )
            ),
        )

    def __call__(
        self,
        renderer: Renderer,
        past: torch.Tensor,
        cond: torch.Tensor,
        uniforms: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `render_reference`: (tokens [B, n] int64, the last past [B, render_past])."""
        if renderer is not self.renderer:
            raise ValueError("this render loop was built for another renderer")
        batch, n = uniforms.shape
        hidden, past_len = self.spec.hidden, self.spec.past
        if past.shape != (batch, past_len) or cond.dim() != 3 or cond.shape[::2] != (batch, hidden):
            raise ValueError(
                f"render: past {tuple(past.shape)}, cond {tuple(cond.shape)} and uniforms "
                f"{tuple(uniforms.shape)} do not fit a renderer of past {past_len}, "
                f"hidden {hidden}"
            )
        if n > cond.shape[1] * self.spec.hop:
            raise ValueError(f"render: {n} samples need {n} / {self.spec.hop} frames of cond")
        device = past.device
        tokens = torch.empty(batch, n, dtype=torch.long)
        past_out = torch.empty(batch, past_len, dtype=torch.float32)
        if batch == 0:
            return tokens.to(device), past_out.to(device)
        past = past.to("cpu", torch.float32).contiguous()
        cond = cond.to("cpu", torch.float32).contiguous()
        uniforms = uniforms.to("cpu", torch.float32).contiguous()
        status = self.lib.lofi_render(
            ctypes.byref(self.spec),
            batch,
            n,
            past.data_ptr(),
            cond.data_ptr(),
            cond.stride(0),
            cond.shape[1],
            uniforms.data_ptr(),
            self.scale,
            tokens.data_ptr(),
            past_out.data_ptr(),
        )
        _check(status, "the render inputs")
        return tokens.to(device), past_out.to(device)


def render_loop_name(loop: RenderLoop) -> str:
    """What runs a render loop, for messages: "fused (C kernel)" or "reference"."""
    return getattr(loop, "name", "reference")


def render_loop_for(renderer: Renderer, engine: str, device: torch.device) -> RenderLoop:
    """The render loop `engine` asks for: the C kernel's ("auto", "fused"), or
    `render_reference` for "reference", off the CPU, or (auto) where no kernel builds here;
    engine "fused" without a kernel is a ConfigError."""
    engine = choice(engine, ENGINES, "engine")
    if engine == "reference" or torch.device(device).type != "cpu":
        return render_reference
    lib = load_kernel()
    if lib is None:
        if engine == "fused":
            why, fix = (
                ("LOFIBEATS_KERNEL turns it off", "unset LOFIBEATS_KERNEL")
                if kernel_switched_off()
                else ("no C compiler could build it here", "install a C compiler")
            )
            raise ConfigError(
                f"engine=fused: the plan renderer's fused loop is the C generation kernel and "
                f"{why}; {fix}, or use engine=auto or engine=reference"
            )
        return render_reference
    return CRenderLoop(lib, renderer)
