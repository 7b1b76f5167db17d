"""Weights on disk: ``config.json`` + ``model.safetensors`` (+ ``meta.json``); no pickle is ever read."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

import torch
from safetensors.torch import load_file, save_file

from pipelines import __version__
from pipelines.config import from_dict

CONFIG, WEIGHTS, META = "config.json", "model.safetensors", "meta.json"


def save_module(
    module: torch.nn.Module, directory: str | Path, config: dict[str, Any], meta: dict | None = None
) -> Path:
    """Write ``config`` as JSON, the module's state dict as safetensors and ``meta`` (plus the code version)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, directory / WEIGHTS)
    (directory / META).write_text(json.dumps({"code_version": __version__, **(meta or {})}, indent=2))
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved module; FileNotFoundError naming the folder if it is missing."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected a folder written by save_pretrained.")
    return json.loads(path.read_text())


def load_state(module: torch.nn.Module, directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load ``model.safetensors`` into ``module`` (strict: every key must match); eval mode."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected the weights beside {CONFIG}.")
    state = load_file(path, device=str(device))
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensor shapes differ
        raise ValueError(f"{path} does not match the architecture in {CONFIG}: {err}") from err
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the architecture in {CONFIG}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    return module.to(device).eval()


class SavesPretrained:
    """``save_pretrained`` / ``from_pretrained`` for a module whose ``config`` is a frozen dataclass of type CONFIG."""

    CONFIG: type

    def save_pretrained(self, directory: str | Path, meta: dict | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (every parameter and buffer) and ``meta.json``."""
        return save_module(self, directory, asdict(self.config), meta)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> Self:
        """Rebuild the module from a folder written by :meth:`save_pretrained` (eval mode)."""
        config = from_dict(cls.CONFIG, read_config(directory), where=str(Path(directory) / CONFIG))
        return load_state(cls(config), directory, device)


RUN_IDENTITY = ("data_key", "steps", "best_step", "best_score")  # the meta keys that identify a training run's weights


def meta_matches(directory: str | Path, meta: dict[str, Any], keys: tuple[str, ...] = RUN_IDENTITY) -> bool:
    """Whether ``directory/meta.json`` exists and agrees with ``meta`` on every key in ``keys``."""
    path = Path(directory) / META
    saved = json.loads(path.read_text()) if path.is_file() else {}
    return all(saved.get(key) == meta[key] for key in keys)
