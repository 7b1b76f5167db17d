"""The prepared dataset every reader returns, and its on-disk cache keyed by a hash of config and inputs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass
class Split:
    """fMRI samples of one split with the clip each one is paired with."""

    fmri: np.ndarray  # array of shape (n_samples, n_voxels), or (n_samples, n_window, n_voxels) with an HRF window
    run: np.ndarray  # array of shape (n_samples,), str: stimulus run of each sample (e.g. "seg3")
    clip: np.ndarray  # array of shape (n_samples,), int: clip index within its run
    repeat: np.ndarray  # array of shape (n_samples,), int: repeat number (1-based), or 0 where repeats are averaged
    frames: np.ndarray | None = None  # array of shape (n_samples, n_frames, height, width, 3), uint8

    def __len__(self) -> int:
        return self.fmri.shape[0]


@dataclass
class PreparedDataset:
    """A reader's output: splits, the voxel → grayordinate map, and what made them."""

    name: str  # "cc2017", "hcp7t" or "algonauts2021"
    subject: str
    splits: dict[str, Split]
    voxel_grayordinates: np.ndarray  # array of shape (n_voxels,), int: HCP 91k index of each voxel, -1 if none
    tr: float  # seconds per fMRI volume
    clip_seconds: float  # seconds of stimulus per clip
    fps: float  # frame rate of the clip frames
    config: dict[str, Any]
    key: str  # hash of config and input files
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. reliability statistics, standardiser

    @property
    def n_voxels(self) -> int:
        return int(self.voxel_grayordinates.shape[0])

    def summary(self) -> dict[str, Any]:
        """Counts that ``inspect`` prints."""
        out: dict[str, Any] = {"dataset": self.name, "subject": self.subject, "key": self.key}
        for name, split in self.splits.items():
            out[f"n_{name}_clips"] = len(split)
        out["n_selected_voxels"] = self.n_voxels
        out["fmri_sample_shape"] = list(self.splits["train"].fmri.shape[1:])
        first = self.splits["train"].frames
        out["clip_frames_shape"] = list(first.shape[1:]) if first is not None else None
        out["tr"], out["fps"], out["clip_seconds"] = self.tr, self.fps, self.clip_seconds
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the dataset to ``directory`` (npy arrays + meta.json)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, split in self.splits.items():
            np.save(directory / f"{name}_fmri.npy", split.fmri)
            np.savez(directory / f"{name}_index.npz", run=split.run.astype(str), clip=split.clip, repeat=split.repeat)
            if split.frames is not None:
                np.save(directory / f"{name}_frames.npy", split.frames)
        np.savez(directory / "voxels.npz", voxel_grayordinates=self.voxel_grayordinates, **self.extras)
        meta = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "subject": self.subject,
            "tr": self.tr,
            "clip_seconds": self.clip_seconds,
            "fps": self.fps,
            "config": self.config,
            "key": self.key,
            "splits": list(self.splits),
        }
        (directory / "meta.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap_frames: bool = True) -> PreparedDataset:
        """Read a dataset written by :meth:`save`; frames are memory-mapped by default."""
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} does not exist; expected a prepared dataset directory.")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}.")
        splits = {}
        for name in meta["splits"]:
            index = np.load(directory / f"{name}_index.npz")
            frames_path = directory / f"{name}_frames.npy"
            frames = np.load(frames_path, mmap_mode="r" if mmap_frames else None) if frames_path.is_file() else None
            splits[name] = Split(
                fmri=np.load(directory / f"{name}_fmri.npy"),
                run=index["run"],
                clip=index["clip"],
                repeat=index["repeat"],
                frames=frames,
            )
        with np.load(directory / "voxels.npz") as f:
            arrays = {k: f[k] for k in f.files}
        return cls(
            name=meta["name"],
            subject=meta["subject"],
            splits=splits,
            voxel_grayordinates=arrays.pop("voxel_grayordinates"),
            tr=meta["tr"],
            clip_seconds=meta["clip_seconds"],
            fps=meta["fps"],
            config=meta["config"],
            key=meta["key"],
            extras=arrays,
        )


def default_cache_dir() -> Path:
    """``$MINDREEL_CACHE``, else ``~/.cache/mindreel``."""
    return Path(os.environ.get("MINDREEL_CACHE", Path.home() / ".cache" / "mindreel"))


def files_fingerprint(paths: list[Path]) -> list[list[Any]]:
    """Name, size and modification time of each input file, for cache keys."""
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(paths)]


def cached(
    build: Callable[[], PreparedDataset], key: str, name: str, cache_dir: str | Path | None = None
) -> PreparedDataset:
    """Load ``<cache_dir>/<name>-<key>`` if present, else build, save atomically and return.

    ``cache_dir=None`` uses :func:`default_cache_dir`; pass ``False``-like empty string to disable caching.
    """
    if cache_dir == "":
        return build()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{name}-{key}"
    if (target / "meta.json").is_file():
        return PreparedDataset.load(target)
    dataset = build()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{key}-", dir=root))
    try:
        dataset.save(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedDataset.load(target)
