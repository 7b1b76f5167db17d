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
    clip_hard_negatives: bool = False  # CLIP: add each caption with its category swapped as a negative (NegCLIP)
    clip_corpus_runs: int = 0  # CLIP: train on this many extra simulated movies no subject saw (0: none)
    clip_negatives_per_pair: int = 1  # CLIP with hard negatives: category swaps per pair (1 to n_categories - 1)
    clip_selection: str = "retrieval"  # CLIP checkpoint score on validation: "retrieval" or "retrieval+swap"
    classifier_corpus_runs: int = 0  # frame classifier: train on this many extra simulated movies too (0: none)
    classifier_colour: bool = False  # frame classifier: permute colour channels, scale saturation (colour ≠ category)
    classifier_blur: float = 0.0  # frame classifier: blur half the frames, sigma up to this (pixels; 0: never)

    def options(self, role: str) -> dict:
        """Keyword arguments of ``role``'s trainer beyond its LoopConfig (recorded and compared with it).

        Only settings that differ from the trainer's defaults, so that a model trained before an option existed
        stays up to date.
        """
        settings = {
            "clip": (
                ("hard_negatives", self.clip_hard_negatives, False),
                ("corpus_runs", self.clip_corpus_runs, 0),
                ("negatives_per_pair", self.clip_negatives_per_pair, 1),
                ("selection", self.clip_selection, "retrieval"),
            ),
            "frame_classifier": (
                ("corpus_runs", self.classifier_corpus_runs, 0),
                ("colour", self.classifier_colour, False),
                ("blur", self.classifier_blur, 0.0),
            ),
        }.get(role, ())
        return {name: value for name, value, default in settings if value != default}
