"""Argument checks shared by the decoder modules: each raises an error that says what was expected and what came."""

from __future__ import annotations

import torch


def check_positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name}: expected a positive integer, got {value!r}.")


def check_dropout(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{type(config).__name__}.{name}: expected a probability in [0, 1), got {value!r}.")


def check_shape(x: torch.Tensor, name: str, expected: tuple[int | None, ...], layout: str) -> None:
    """ValueError unless ``x`` has ``len(expected)`` dims matching ``expected`` (None: any size)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}.")
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape, strict=False))
    if not ok:
        raise ValueError(f"{name}: expected a tensor of shape {layout}, got shape {tuple(x.shape)}.")
