"""One resumable training loop shared by the backbone and decoder trainers (each supplies batches, loss, validation).

Reads top to bottom: sample a batch → loss → step → every ``eval_every`` steps validate, keep the best weights,
write a checkpoint atomically. A run interrupted at any point resumes from its last checkpoint with the same
random stream (the batch generator is re-seeded from the step number), so it ends where an uninterrupted run
would. Checkpoint selection uses the validation score only; the trainers never pass test data here.

The loop runs on Hugging Face Accelerate: the same code trains on the CPU, on one GPU, or on several processes
started with ``accelerate launch`` (each process draws its own batches, gradients are averaged, the main process
writes the checkpoints). Batches are moved to the accelerator's device with :func:`to_device`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings of one backbone."""

    steps: int = 1000  # optimiser steps
    batch_size: int = 32  # samples per step
    lr: float = 1e-3  # AdamW learning rate (peak, after warm-up)
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: int = 50  # linear warm-up steps, then cosine decay to 10 % of lr
    eval_every: int = 100  # steps between validation + checkpoint
    grad_clip: float = 1.0  # max gradient norm (0: none)
    seed: int = 0  # seeds the batches and the initialisation


@dataclass
class LoopResult:
    """What a finished (or resumed-and-finished) run reports."""

    best_score: float  # validation score of the kept weights (lower is better)
    best_step: int
    history: list[dict[str, float]]  # one entry per validation: step, train loss, score
    seconds: float  # wall time of this process's part of the run


def _lr(step: int, config: LoopConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress))))


def _param_groups(model: torch.nn.Module, params: list | None) -> list[dict[str, Any]]:
    """``params`` of :func:`train` as AdamW parameter groups, each with its ``lr_scale``.

    Raises
    ------
    ValueError
        If a group's ``lr_scale`` is not a positive number or a group has no parameters.
    """
    params = list(params) if params is not None else list(model.parameters())
    if not params or not all(isinstance(p, dict) for p in params):
        return [{"params": params, "lr_scale": 1.0}]
    groups = []
    for i, group in enumerate(params):
        scale = group.get("lr_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"params[{i}]['lr_scale']: expected a positive number, got {scale!r}.")
        members = list(group["params"])
        if not members:
            raise ValueError(f"params[{i}]: expected a parameter group with parameters, got none.")
        groups.append({**group, "params": members, "lr_scale": float(scale)})
    return groups


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor in it (also inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a distributed wrapper (``model.module``), or ``model`` itself."""
    return getattr(model, "module", model)


def train(
    name: str,
    model: torch.nn.Module,
    sample_batch: Callable[[np.random.Generator], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    validate: Callable[[torch.nn.Module], float],
    config: LoopConfig,
    workdir: str | Path,
    params: list[torch.nn.Parameter] | list[dict[str, Any]] | None = None,
    accelerator: Accelerator | None = None,
) -> tuple[torch.nn.Module, LoopResult]:
    """Train ``model`` and return it with its best validation weights loaded.

    Parameters
    ----------
    name : str
        Shown on the progress bar.
    sample_batch : callable
        rng → one training batch (anything ``loss_fn`` accepts).
    loss_fn : callable
        (model, batch) → scalar loss tensor.
    validate : callable
        model → validation score, lower is better (called in eval mode under no_grad).
    workdir : str or Path
        Checkpoints go here (``state.json``, and ``last``, ``best`` and ``optimizer`` as safetensors, written
        atomically); an existing checkpoint is resumed.
    params : list of parameters, or of parameter groups, optional
        What to optimise (default: all of ``model``'s). A group is a dict ``{"params": [...], "lr_scale": s}``: its
        learning rate is ``s`` times the schedule's (warm-up and decay included; ``lr_scale`` defaults to 1).
    accelerator : Accelerator, optional
        Default: one on the model's device (CPU unless the model was moved to a GPU). ``loss_fn`` receives the
        prepared model (under several processes a distributed wrapper: reach attributes through :func:`unwrap`)
        and the batch on the accelerator's device; ``validate`` receives the plain model.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    groups = _param_groups(model, params)
    params = [p for group in groups for p in group["params"]]  # for the gradient clip
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    state_path = workdir / "state.json"
    start, history, best_score, best_step = 0, [], float("inf"), -1
    if state_path.is_file():  # resume
        state = json.loads(state_path.read_text())
        if state["config"] != asdict(config):
            raise ValueError(
                f"{workdir} holds a checkpoint trained with {state['config']}, not {asdict(config)}; "
                "delete the folder or use the same settings to resume."
            )
        model.load_state_dict(load_file(workdir / "last.safetensors"))
        optimizer.load_state_dict(_optimizer_from_tensors(optimizer, load_file(workdir / "optimizer.safetensors")))
        start, history = state["step"], state["history"]
        best_score, best_step = state["best_score"], state["best_step"]
    best = load_file(workdir / "best.safetensors") if (workdir / "best.safetensors").is_file() else None
    if accelerator is None:
        first = next(model.parameters(), None)
        accelerator = Accelerator(cpu=first is None or first.device.type == "cpu")
    plain = model
    model, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process

    began, losses = time.time(), []
    progress = tqdm(
        range(start, config.steps), desc=name, initial=start, total=config.steps, unit="step", disable=not main
    )
    for step in progress:
        rank = [accelerator.process_index] if accelerator.process_index else []  # process 0: the 1-process stream
        rng = np.random.default_rng([config.seed, step, *rank])
        torch.manual_seed(config.seed * 1_000_003 + step + 7919 * accelerator.process_index)
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config) * group["lr_scale"]
        loss = loss_fn(model, to_device(sample_batch(rng), accelerator.device))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            model.eval()
            with torch.no_grad():
                score = float(validate(plain))
            history.append(
                {"step": step + 1, "train_loss": float(np.mean(losses[-config.eval_every :])), "score": score}
            )
            improved = score < best_score
            if improved:
                best_score, best_step = score, step + 1
                best = {k: v.detach().clone() for k, v in plain.state_dict().items()}
            if main:
                if improved:
                    _atomic_save(best, workdir / "best.safetensors")
                _atomic_save(plain.state_dict(), workdir / "last.safetensors")
                _atomic_save(_optimizer_to_tensors(optimizer), workdir / "optimizer.safetensors")
                state = {"step": step + 1, "history": history, "best_score": best_score, "best_step": best_step,
                         "config": asdict(config)}  # fmt: skip
                tmp = state_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=1))
                os.replace(tmp, state_path)
                progress.write(
                    f"{name} step {step + 1}: train loss {history[-1]['train_loss']:.4f}, validation {score:.4f}"
                )
            accelerator.wait_for_everyone()
    if best is not None:
        plain.load_state_dict(best)
    plain.eval()
    return plain, LoopResult(best_score, best_step, history, time.time() - began)


def checkpoint_step(workdir: str | Path) -> int:
    """The step a checkpoint in ``workdir`` has reached (0 if there is none)."""
    state = Path(workdir) / "state.json"
    return int(json.loads(state.read_text())["step"]) if state.is_file() else 0


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state as flat tensors (safetensors, no pickle): exp_avg, exp_avg_sq and step per parameter."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{index}.{key}"] = torch.as_tensor(value).reshape(-1) if key == "step" else value
    return out


def _optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict:
    state_dict = copy.deepcopy(optimizer.state_dict())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for flat, value in tensors.items():
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value.reshape(()) if key == "step" else value
    state_dict["state"] = state
    return state_dict
