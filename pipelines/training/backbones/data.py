"""What the demo backbones train on: the simulated subject's clips, split as the CC2017 reader splits them.

Training uses the reader's training segments, checkpoint selection its validation segment, and every reported
number the test runs, which training never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.config import from_dict, load_config, preset_path
from pipelines.data.cc2017 import CC2017Config, prepare_cc2017
from pipelines.data.dataset import PreparedDataset, Split
from pipelines.data.twin import groundtruth
from pipelines.data.twin.stimuli import StimulusConfig
from pipelines.features.extract import simulated_labels
from pipelines.training.backbones.corpus import build_corpus


@dataclass
class BackboneData:
    """The prepared simulated subject with the simulator's labels of every clip, per split."""

    root: Path
    dataset: PreparedDataset  # frames: (n_clips, 8, 64, 64, 3) uint8 per split
    labels: dict[str, dict[str, np.ndarray]]  # split → caption, category_id, direction_bin, each (n_clips,)
    categories: tuple[str, ...]
    cache_dir: Path | None = None  # where the prepared dataset (and a pretraining corpus) are cached

    def corpus(self, n_runs: int) -> dict[str, np.ndarray]:
        """``n_runs`` movies of extra training clips no subject saw (:mod:`pipelines.training.backbones.corpus`).

        Rendered with the subject's stimulus settings, ``n_movie_trs`` clips per movie, and sampled as this
        dataset's clips; labels as :attr:`labels` (``caption``, ``category_id``, ``direction_bin``) plus ``frames``.
        """
        meta = groundtruth.load_meta(self.root)
        stimulus = from_dict(StimulusConfig, meta["config"]["stimulus"], where=f"{self.root}/groundtruth/twin.json")
        frames = self.frames("train")
        clip_fps = frames.shape[1] / stimulus.clip_seconds
        return build_corpus(stimulus, n_runs, int(meta["config"]["n_movie_trs"]), clip_fps, frames.shape[2:4],
                            int(meta.get("seed", 0)), self.cache_dir)  # fmt: skip

    def split(self, name: str) -> Split:
        return self.dataset.splits[name]

    def frames(self, split: str) -> np.ndarray:
        """The frames of ``split``, checked: uint8 array of shape (n_clips, n_frames, height, width, 3)."""
        frames = self.split(split).frames
        if frames is None or frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            got = "None" if frames is None else f"{frames.dtype} array of shape {frames.shape}"
            raise ValueError(
                f"data.split({split!r}).frames: expected a uint8 array of shape (n_clips, n_frames, height, width, 3), "
                f"got {got}. Prepare the dataset with clip frames (load_backbone_data does)."
            )
        return frames


def load_backbone_data(root: str | Path, cache_dir: str | Path | None = None) -> BackboneData:
    """Prepare a simulated subject with the default CC2017 reader config and attach its labels.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a simulated subject (the backbones' captions and labels come from its ground truth).
    """
    root = Path(root)
    meta = groundtruth.load_meta(root)
    config = load_config(CC2017Config, preset_path("data", "cc2017"))
    dataset = prepare_cc2017(root, config, cache_dir)
    labels = {name: simulated_labels(root, split) for name, split in dataset.splits.items()}
    return BackboneData(
        root, dataset, labels, tuple(meta["categories"]), None if cache_dir is None else Path(cache_dir)
    )
