"""Demo-tier frame classifier: a small CNN over the simulated categories (the n-way metrics' classifier).

The full tier uses ViT-B/16 (ImageNet) and VideoMAE-base (Kinetics-400); the demo tier's video classifier averages
this model's frame logits over a clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.models.io import SavesPretrained


@dataclass(frozen=True)
class FrameClassifierConfig:
    """Architecture of the demo frame classifier."""

    labels: tuple[str, ...] = ()  # class names, in logit order
    image_size: int = 64  # input frames are resized to this square size
    channels: tuple[int, ...] = (32, 64, 128)  # conv widths; each stage halves the resolution
    dropout: float = 0.1  # before the linear head


class FrameClassifier(SavesPretrained, nn.Module):
    """Conv–BN–ReLU stages, global average pooling and a linear head.

    Input: tensor of shape (n_frames, 3, image_size, image_size) in [0, 1]; output: logits (n_frames, n_labels).
    """

    CONFIG = FrameClassifierConfig

    def __init__(self, config: FrameClassifierConfig):
        super().__init__()
        if not config.labels:
            raise ValueError("FrameClassifierConfig.labels: expected at least one class name, got none.")
        self.config = config
        layers, c_in = [], 3
        for c_out in config.channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(c_out, c_out, 3, padding=1, stride=2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(c_in, len(config.labels)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.new_tensor([0.5, 0.5, 0.5])[:, None, None]
        return self.head(self.features((images - mean) / 0.25).mean(dim=(2, 3)))
