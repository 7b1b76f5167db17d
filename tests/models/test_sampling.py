"""Sampling helpers checked against analytic cases: an oracle denoiser, integer shifts, simulated correlations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from pipelines.models.sampling import (
    SD_SCHEDULE,
    accumulate_flow,
    animate,
    ddim_invert,
    ddim_sample,
    dependent_noise,
    guided_noise,
    make_scheduler,
    renoise,
    start_timesteps,
    warp,
)


def oracle(x0: torch.Tensor, scheduler):
    """The exact noise predictor for data that is always ``x0``: ε = (x_t − √ᾱ_t·x₀)/√(1−ᾱ_t)."""

    def unet(x, t, cond):
        a = scheduler.alphas_cumprod[int(t)]
        return (x - a.sqrt() * x0.repeat(x.shape[0] // x0.shape[0], 1, 1, 1, 1)) / (1 - a).sqrt()

    return unet


@pytest.fixture
def x0():
    return torch.randn(2, 3, 4, 5, 5, generator=torch.Generator().manual_seed(0))


def test_dependent_noise_has_unit_variance_and_frame_correlation_beta():
    g = torch.Generator().manual_seed(0)
    for beta in (0.0, 0.3, 0.8):
        eps = dependent_noise((200, 1, 2, 20, 20), beta, g)
        a, b = eps[:, :, 0].flatten(), eps[:, :, 1].flatten()
        assert abs(float(eps.var()) - 1.0) < 0.02
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1]) - beta) < 0.02


def test_dependent_noise_is_seeded():
    a = dependent_noise((1, 2, 3, 4, 4), 0.5, torch.Generator().manual_seed(7))
    b = dependent_noise((1, 2, 3, 4, 4), 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("shape", "beta", "match"),
    [((1, 2, 3, 4), 0.5, "batch, channels, n_frames"), ((1, 2, 3, 4, 4), 1.5, "beta"), ((1, 2, 3, 4, 4), True, "beta")],
)
def test_dependent_noise_errors(shape, beta, match):
    with pytest.raises(ValueError, match=match):
        dependent_noise(shape, beta)


def test_start_timesteps_keeps_the_steps_at_or_below_start():
    s = make_scheduler()
    steps = start_timesteps(s, 50, 200)
    assert steps.max() <= 200 and len(steps) == int((s.timesteps <= 200).sum())
    assert torch.all(steps[:-1] > steps[1:])


@pytest.mark.parametrize(
    ("steps", "start", "match"), [(0, 200, "num_inference_steps"), (5, -1, "start timestep"), (5, 1000, "start")]
)
def test_start_timesteps_errors(steps, start, match):
    with pytest.raises(ValueError, match=match):
        start_timesteps(make_scheduler(), steps, start)


def exact_scheduler():
    """DDIM whose last step lands on ᾱ = 1 (SD's set_alpha_to_one=False stops at ᾱ₀ = 0.99915, a hair before x₀)."""
    return DDIMScheduler(**SD_SCHEDULE, clip_sample=False, set_alpha_to_one=True)


def test_ddim_sample_with_the_oracle_recovers_the_data_from_renoised_latents(x0):
    s = exact_scheduler()
    steps = start_timesteps(s, 50, 400)
    noisy = renoise(s, x0, torch.randn_like(x0), steps[0])
    assert not torch.allclose(noisy, x0, atol=0.1)
    out = ddim_sample(oracle(x0, s), s, noisy, steps, cond=torch.zeros(2, 1, 1))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_ddim_inversion_then_sampling_returns_the_latents(x0):
    s = exact_scheduler()
    steps = start_timesteps(s, 20, 600)
    unet = oracle(x0, s)
    inverted = ddim_invert(unet, s, x0, torch.zeros(2, 1, 1), steps)
    a = s.alphas_cumprod[int(steps[0])]
    assert float((inverted - a.sqrt() * x0).abs().max()) < 0.2  # close to the noiseless forward process
    torch.testing.assert_close(ddim_sample(unet, s, inverted, steps, cond=None), x0, atol=1e-4, rtol=1e-4)


def test_guided_noise_is_the_cfg_combination():
    def unet(x, t, cond):
        return x * 0 + cond.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    x = torch.zeros(2, 1, 1, 2, 2)
    cond, uncond = torch.full((2, 3, 4), 2.0), torch.full((2, 3, 4), 0.5)
    out = guided_noise(unet, x, torch.tensor(10), cond, uncond, 3.0)
    torch.testing.assert_close(out, torch.full_like(x, 0.5 + 3.0 * 1.5))
    torch.testing.assert_close(guided_noise(unet, x, torch.tensor(10), cond, None, 3.0), torch.full_like(x, 2.0))


def test_renoise_errors(x0):
    with pytest.raises(ValueError, match="noise: expected shape"):
        renoise(make_scheduler(), x0, torch.zeros(1), 200)
    with pytest.raises(ValueError, match="latents: expected a tensor"):
        renoise(make_scheduler(), x0[0], x0[0], 200)


def test_warp_by_an_integer_flow_shifts_the_content():
    latent = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0], flow[:, 1] = 2.0, 1.0  # content moves 2 px right, 1 px down
    out = warp(latent, flow)
    np.testing.assert_allclose(out[..., 1:, 2:].numpy(), latent[..., :-1, :-2].numpy(), atol=1e-4)
    torch.testing.assert_close(warp(latent, torch.zeros_like(flow)), latent)
    with pytest.raises(ValueError, match="flow: expected shape"):
        warp(latent, flow[:, :1])


def test_accumulate_flow_adds_and_interpolates():
    flows = torch.ones(1, 3, 2, 4, 4)  # 1 px per flow, frames 2 apart
    out = accumulate_flow(flows, n_frames=8, stride=2)
    np.testing.assert_allclose(out[0, :, 0, 0, 0].numpy(), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5])
    with pytest.raises(ValueError, match="flows: expected a tensor"):
        accumulate_flow(flows[0], 8, 2)
    with pytest.raises(ValueError, match="positive integers"):
        accumulate_flow(flows, 8, 0)


def test_animate_moves_the_first_latent_along_the_rescaled_flow():
    first = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    flows = torch.zeros(1, 1, 2, 16, 16)
    flows[:, :, 0] = 2.0  # 2 px on a 16-px grid = 1 latent px per flow, frames 1 apart
    video = animate(first, flows, n_frames=2, stride=1)
    assert video.shape == (1, 2, 2, 8, 8)
    torch.testing.assert_close(video[:, :, 0], first)
    torch.testing.assert_close(video[:, :, 1, :, 1:], first[..., :-1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="flows: expected a tensor of shape"):
        animate(first, flows[0], 2, 1)
