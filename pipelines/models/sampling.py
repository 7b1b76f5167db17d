"""Sampling for the video renderer: DDIM with classifier-free guidance, DDIM inversion, re-noising at a chosen
timestep, NeuroCine's dependent prior noise, and BrainNRDS-style animation of a first-frame latent along a flow.

Pure functions over a denoiser with the :class:`pipelines.models.video_unet.VideoUNet` signature
``unet(sample (batch, channels, n_frames, h, w), timestep, encoder_hidden_states (batch, n_tokens, dim))`` and a
diffusers ``DDIMScheduler``; no training code and no file reading. Video latents are tensors of shape
(batch, channels, n_frames, height, width) throughout.

Deviations from the published code, and why (../shared/reference/methods_and_protocols.md):

- Mind-Animator inverts its layout latents with 50 DDIM steps all the way to T, adds fresh noise to the inverted
  latent at t = 200 and then runs all 50 steps from T (C.1, steps 3-5). Here the layout is brought to the start
  timestep t0 (default 200) either by fresh noise (``renoise``, SDEdit) or by DDIM inversion up to t0
  (``ddim_invert``), and only the steps at or below t0 are run. That keeps the layout the published recipe is
  after, at a fifth of the cost, which the 2-s CPU budget of the demo needs.
- NeuroCine's dependent prior noise is known from its abstract only (C.5): ε_j = √β·ε_shared + √(1−β)·ε_j per frame
  j, with one ε_shared per clip; β = 0 switches it off.
- BrainNRDS renders with DragNUWA from the first frame and the decoded flow (C.4), a model that cannot be loaded
  offline. :func:`animate` is the stand-in: the first-frame latent is warped backwards along the accumulated flow,
  and the renderer refines the result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

# SD's scaled-linear DDPM schedule: the demo renderer was trained with it (pipelines.training.backbones.unet).
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_scheduler(schedule: dict | None = None) -> DDIMScheduler:
    """A deterministic (η = 0) DDIM scheduler over ``schedule`` (default: SD's), as the published pipelines use."""
    return DDIMScheduler(**(schedule or SD_SCHEDULE), clip_sample=False, set_alpha_to_one=False)


def _check_video(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor of shape (batch, channels, n_frames, height, width), got {got}.")


def dependent_noise(
    shape: tuple[int, ...],
    beta: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """NeuroCine's dependent prior noise: ε_j = √β·ε_shared + √(1−β)·ε_j for every frame j of a clip.

    Each frame's noise stays standard normal; the correlation between two frames of a clip is β.

    Parameters
    ----------
    shape : tuple of int
        (batch, channels, n_frames, height, width).
    beta : float
        Shared fraction of the variance, in [0, 1]; 0 gives independent noise per frame.

    Returns
    -------
    tensor of shape ``shape``, float32

    Raises
    ------
    ValueError
        For a shape that is not 5-D or β outside [0, 1].
    """
    if len(shape) != 5:
        raise ValueError(f"shape: expected (batch, channels, n_frames, height, width), got {tuple(shape)}.")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta: expected a number in [0, 1], got {beta!r}.")
    b, c, _, h, w = shape
    shared = torch.randn((b, c, 1, h, w), generator=generator)
    own = torch.randn(tuple(shape), generator=generator)
    return (beta**0.5 * shared + (1.0 - beta) ** 0.5 * own).to(device)


def start_timesteps(scheduler: DDIMScheduler, num_inference_steps: int, start: int) -> torch.Tensor:
    """The DDIM timesteps of a ``num_inference_steps`` schedule that are ≤ ``start`` (descending).

    Raises
    ------
    ValueError
        If no timestep of the schedule is at or below ``start``.
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps: expected a positive integer, got {num_inference_steps!r}.")
    n_train = int(scheduler.config.num_train_timesteps)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < n_train:
        raise ValueError(f"start timestep: expected an integer in [0, {n_train}), got {start!r}.")
    scheduler.set_timesteps(num_inference_steps)
    steps = scheduler.timesteps[scheduler.timesteps <= start]
    if len(steps) == 0:
        raise ValueError(
            f"start timestep: expected at least one of the {num_inference_steps} DDIM timesteps "
            f"(smallest {int(scheduler.timesteps.min())}) at or below it, got {start}. Raise the start timestep or "
            "num_inference_steps."
        )
    return steps


def guided_noise(
    unet: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Classifier-free guidance: ε_u + scale·(ε_c − ε_u), in one batched call (no guidance if ``uncond`` is None)."""
    if uncond is None or scale == 1.0:
        return unet(x, t, cond)
    eps_uncond, eps_cond = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).chunk(2)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def renoise(
    scheduler: DDIMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor
) -> torch.Tensor:
    """Forward-diffuse clean latents to timestep ``t``: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (SDEdit's start)."""
    _check_video(latents, "latents")
    if noise.shape != latents.shape:
        raise ValueError(
            f"noise: expected shape {tuple(latents.shape)} (that of the latents), got {tuple(noise.shape)}."
        )
    return scheduler.add_noise(latents, noise, torch.as_tensor(t, dtype=torch.long).reshape(1))


@torch.no_grad()
def ddim_invert(
    unet: Denoiser, scheduler: DDIMScheduler, latents: torch.Tensor, cond: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """Deterministic DDIM inversion of clean latents up to the largest of ``timesteps``.

    Runs the η = 0 update backwards: from x at timestep s to timestep t > s, x_t = √ᾱ_t·x̂₀ + √(1−ᾱ_t)·ε(x_s, s),
    with x̂₀ = (x_s − √(1−ᾱ_s)·ε)/√ᾱ_s. Mind-Animator inverts with the empty prompt as ``cond``.

    Parameters
    ----------
    latents : tensor of shape (batch, channels, n_frames, height, width)
    cond : tensor of shape (batch, n_tokens, dim)
    timesteps : 1-D tensor
        The sampling timesteps (any order); inversion visits them in ascending order.
    """
    _check_video(latents, "latents")
    alphas = scheduler.alphas_cumprod.to(latents.device)
    x = latents
    previous = None
    for t in sorted(int(s) for s in timesteps):
        # the first step starts from the clean latents, taken as timestep 0 (ᾱ₀ ≈ 1)
        s = 0 if previous is None else previous
        a_s, a_t = alphas[s], alphas[t]
        eps = unet(x, torch.tensor(s, device=x.device), cond)
        x0 = (x - (1 - a_s).sqrt() * eps) / a_s.sqrt()
        x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        previous = t
    return x


@torch.no_grad()
def ddim_sample(
    unet: Denoiser,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (at ``timesteps[0]``) through ``timesteps`` with DDIM (η = 0) and classifier-free guidance.

    ``scheduler.set_timesteps`` must have been called with the schedule ``timesteps`` come from
    (:func:`start_timesteps` does).

    Returns
    -------
    tensor of shape (batch, channels, n_frames, height, width): the clean latents
    """
    _check_video(latents, "latents")
    x = latents
    for i, t in enumerate(timesteps):
        eps = guided_noise(unet, x, t, cond, uncond, guidance_scale)
        x = scheduler.step(eps, t, x).prev_sample
        if callback is not None:
            callback(i)
    return x


def warp(latent: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(p) = latent(p − flow(p)), bilinear, border values outside.

    The flow moves content from the source forward by ``flow`` (RAFT's convention, first → second frame), so the
    second frame at p is approximated by the first at p − flow(p).

    Parameters
    ----------
    latent : tensor of shape (batch, channels, height, width)
    flow : tensor of shape (batch, 2, height, width)
        (dx, dy) in pixels of ``latent``.
    """
    b, _, h, w = latent.shape
    if flow.shape != (b, 2, h, w):
        raise ValueError(f"flow: expected shape {(b, 2, h, w)}, got {tuple(flow.shape)}.")
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=latent.dtype, device=latent.device),
        torch.arange(w, dtype=latent.dtype, device=latent.device),
        indexing="ij",
    )
    src_x = xs - flow[:, 0]
    src_y = ys - flow[:, 1]
    grid = torch.stack([2 * src_x / max(w - 1, 1) - 1, 2 * src_y / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(latent, grid, mode="bilinear", padding_mode="border", align_corners=True)


def accumulate_flow(flows: torch.Tensor, n_frames: int, stride: int) -> torch.Tensor:
    """Displacement of every frame from frame 0, from flows between frames ``stride`` apart.

    Flow k moves frame k·stride to frame (k+1)·stride; displacements add up (a first-order composition), frames
    between two flow ends are linearly interpolated and frames after the last one continue at its rate.

    Parameters
    ----------
    flows : tensor of shape (batch, n_flows, 2, height, width)
    n_frames, stride : int

    Returns
    -------
    tensor of shape (batch, n_frames, 2, height, width); frame 0 is zero
    """
    if flows.ndim != 5 or flows.shape[2] != 2:
        raise ValueError(
            f"flows: expected a tensor of shape (batch, n_flows, 2, height, width), got {tuple(flows.shape)}."
        )
    if stride < 1 or n_frames < 1:
        raise ValueError(f"n_frames and stride: expected positive integers, got {n_frames} and {stride}.")
    b, n_flows, _, h, w = flows.shape
    ends = torch.cat([flows.new_zeros(b, 1, 2, h, w), flows.cumsum(dim=1)], dim=1)  # at frames 0, s, 2s, …
    out = []
    for j in range(n_frames):
        k = min(j // stride, n_flows - 1)
        frac = (j - k * stride) / stride
        out.append(ends[:, k] + frac * flows[:, k])
    return torch.stack(out, dim=1)


def animate(first_latent: torch.Tensor, flows: torch.Tensor, n_frames: int, stride: int) -> torch.Tensor:
    """Latent video from a first-frame latent moved along decoded flows (the offline stand-in for DragNUWA).

    Parameters
    ----------
    first_latent : tensor of shape (batch, channels, height, width)
    flows : tensor of shape (batch, n_flows, 2, flow_height, flow_width)
        In pixels of the flow grid; resized (and rescaled) to the latent's size.
    n_frames, stride : int
        Frames of the clip, and frames between the two ends of one flow.

    Returns
    -------
    tensor of shape (batch, channels, n_frames, height, width)
    """
    b, c, h, w = first_latent.shape
    if flows.ndim != 5 or flows.shape[0] != b:
        raise ValueError(
            f"flows: expected a tensor of shape ({b}, n_flows, 2, height, width), got {tuple(flows.shape)}."
        )
    n_flows, fh, fw = flows.shape[1], flows.shape[3], flows.shape[4]
    resized = F.interpolate(flows.reshape(b * n_flows, 2, fh, fw), size=(h, w), mode="bilinear", align_corners=False)
    scale = torch.tensor([w / fw, h / fh], dtype=resized.dtype, device=resized.device).view(1, 2, 1, 1)
    displacement = accumulate_flow((resized * scale).reshape(b, n_flows, 2, h, w), n_frames, stride)
    frames = [warp(first_latent, displacement[:, j]) for j in range(n_frames)]
    return torch.stack(frames, dim=2)
