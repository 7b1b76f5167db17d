"""The ridge baseline through the renderer: every decoder replaced by a linear map, the rest of the pipeline unchanged.

``evaluate-decoders`` compares each decoder with a ridge regression on the decoder's own target (embedding MSE,
latent MSE, flow EPE). Whether the difference survives rendering is a separate question, so here the ridge
regressions take the decoders' places in a :class:`VideoReconstructionPipeline` and the videos are scored under
the same protocol as the full pipeline:

| decoder | ridge inputs → target (fitted on the training split, penalty chosen on validation) |
|---|---|
| semantic | the clip's volume → teacher text embedding, and → the renderer's conditioning tokens |
| structure | the clip's volume → the first frame's latent |
| motion | the clip's volume and the first latent → the latents of frames 1… (frame 0 is the first latent) |
| flow | the fMRI window and a 16-px thumbnail of the first frame → the teacher flows |

At inference the structure ridge's latent feeds the motion ridge, and its decoded image the flow ridge, as the
decoders feed each other. The fits are the ones ``evaluate-decoders`` reports (:mod:`pipelines.training.decoders
.ridge`), so the two tables agree. The test split is never used for fitting or for choosing a penalty.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pipelines.models.mind_animator import SemanticOutput
from pipelines.reconstruct import VideoReconstructionPipeline
from pipelines.training.decoders.evaluate import flatten, thumbnails
from pipelines.training.decoders.ridge import RidgeBaseline, fit_ridge


class _Ridge(nn.Module):
    """A fitted :class:`RidgeBaseline` behind a decoder's call signature (numpy inside, tensors outside)."""

    def __init__(self, **models: RidgeBaseline):
        super().__init__()
        self.models = models

    def _predict(self, name: str, *inputs: torch.Tensor | np.ndarray) -> torch.Tensor:
        device = next((x.device for x in inputs if isinstance(x, torch.Tensor)), torch.device("cpu"))
        arrays = [x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in inputs]
        return torch.from_numpy(self.models[name].predict(flatten(*arrays)).astype(np.float32)).to(device)


class RidgeSemantic(_Ridge):
    """volume (n, n_voxels) → :class:`SemanticOutput` (embedding, tokens)."""

    def __init__(self, embedding: RidgeBaseline, tokens: RidgeBaseline, n_tokens: int):
        super().__init__(embedding=embedding, tokens=tokens)
        self.n_tokens = n_tokens

    def forward(self, volume: torch.Tensor) -> SemanticOutput:
        tokens = self._predict("tokens", volume)
        return SemanticOutput(self._predict("embedding", volume), tokens.reshape(len(volume), self.n_tokens, -1))


class RidgeStructure(_Ridge):
    """volume (n, n_voxels) → first-frame latent (n, channels, h, w)."""

    def __init__(self, latent: RidgeBaseline, shape: tuple[int, ...]):
        super().__init__(latent=latent)
        self.shape = tuple(shape)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self._predict("latent", volume).reshape(len(volume), *self.shape)


class RidgeMotion(_Ridge):
    """(first latent, volume) → latents of every frame (n, n_frames, channels, h, w), frame 0 the first latent."""

    def __init__(self, frames: RidgeBaseline, n_frames: int):
        super().__init__(frames=frames)
        self.n_frames = n_frames

    def generate(self, first_latent, fmri, n_frames=None, generator=None) -> torch.Tensor:
        n_frames = self.n_frames if n_frames is None else n_frames
        if not 1 <= n_frames <= self.n_frames:
            raise ValueError(f"n_frames: expected 1 to {self.n_frames}, got {n_frames}.")
        rest = self._predict("frames", fmri, first_latent).reshape(
            len(fmri), self.n_frames - 1, *first_latent.shape[1:]
        )
        return torch.cat([first_latent[:, None].float(), rest], dim=1)[:, :n_frames]


class RidgeFlow(_Ridge):
    """(fMRI window, first image) → flows (n, n_flows, 2, grid, grid); ``expected_flow`` passes them through."""

    def __init__(self, flows: RidgeBaseline, shape: tuple[int, ...], image_size: int):
        super().__init__(flows=flows)
        self.shape = tuple(shape)
        self.config = SimpleNamespace(image_size=image_size)  # the pipeline resizes the first image to this

    def forward(self, fmri: torch.Tensor, first_image: torch.Tensor) -> torch.Tensor:
        small = nn.functional.adaptive_avg_pool2d(first_image.float(), 16).permute(0, 2, 3, 1)
        return self._predict("flows", fmri, small).reshape(len(fmri), *self.shape)

    def expected_flow(self, flows: torch.Tensor) -> torch.Tensor:
        return flows


def fit_ridge_decoders(data, image_size: int, progress: bool = True) -> dict[str, nn.Module]:
    """Fit the four ridge decoders on ``data`` (a :class:`DecoderData`): training split, penalty on validation.

    Parameters
    ----------
    image_size : int
        The first image's size the flow ridge is given (the flow decoder's ``config.image_size``).
    """
    train, val = data.splits["train"], data.splits["val"]

    def fit(inputs, target) -> RidgeBaseline:
        return fit_ridge(flatten(*inputs(train)), flatten(target(train)), flatten(*inputs(val)), flatten(target(val)))

    def volume(split):
        return (split.fmri[:, data.centre],)

    steps = tqdm(total=5, desc="ridge baseline (fit)", disable=not progress)
    models = {}
    embedding = fit(volume, lambda s: s.text)
    steps.update()
    tokens = fit(volume, lambda s: s.tokens)
    steps.update()
    models["semantic"] = RidgeSemantic(embedding, tokens, train.tokens.shape[1])
    models["structure"] = RidgeStructure(fit(volume, lambda s: s.latents[:, 0]), train.latents.shape[2:])
    steps.update()
    models["motion"] = RidgeMotion(
        fit(lambda s: (s.fmri[:, data.centre], s.latents[:, 0]), lambda s: s.latents[:, 1:]), train.latents.shape[1]
    )
    steps.update()
    models["flow"] = RidgeFlow(
        fit(lambda s: (s.fmri, thumbnails(s.first_frames)), lambda s: s.flows), train.flows.shape[1:], image_size
    )
    steps.update()
    steps.close()
    return models


def ridge_baseline(
    pipeline: VideoReconstructionPipeline, decoders: dict[str, nn.Module]
) -> VideoReconstructionPipeline:
    """A copy of ``pipeline`` whose decoders are ``decoders`` (from :func:`fit_ridge_decoders`), conditioned on the
    semantic ridge; renderer, VAE, constants and settings are shared."""
    ridge = copy.copy(pipeline)
    ridge.decoders = {name: module.eval() for name, module in decoders.items()}
    ridge.config = replace(pipeline.config, conditioning="semantic")
    return ridge
