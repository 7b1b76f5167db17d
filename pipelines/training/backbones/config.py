"""Training settings of the demo backbones (pipelines/configs/backbones/train_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.training.loop import LoopConfig


@dataclass(frozen=True)
class BackboneTrainingConfig:
    """One LoopConfig per trained role."""

    clip: LoopConfig = field(default_factory=LoopConfig)  # open_clip's ClipLoss on frames and captions
    frame_classifier: LoopConfig = field(default_factory=LoopConfig)  # cross-entropy over simulated categories
    vae: LoopConfig = field(default_factory=LoopConfig)  # reconstruction + KL
    unet: LoopConfig = field(default_factory=LoopConfig)  # epsilon prediction, text-conditioned
    raft: LoopConfig = field(default_factory=LoopConfig)  # sequence loss against the simulator's exact flow
