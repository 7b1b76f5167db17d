"""``python -m pipelines train-backbones``: train every demo-tier backbone on a simulated subject.

Order (each role needs the ones before it): clip → frame_classifier → vae → unet (conditioned on the CLIP text
tower, denoising the VAE's latents) → raft. A role whose saved model is up to date (same data, same settings) is
skipped; an interrupted role resumes from its last checkpoint in ``--workdir``. ``backbones.json`` in ``--out``
records what was trained, on what, and how long it took; a role whose finished checkpoint is only reloaded (its saved
folder was outdated but its run had ended) keeps the record of the run that trained it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from dataclasses import asdict
from pathlib import Path

from pipelines.config import config_hash, load_config, preset_path, to_dict
from pipelines.features.demo_tier import DemoBackbonesConfig, weights_id
from pipelines.training.backbones.config import BackboneTrainingConfig
from pipelines.training.backbones.data import load_backbone_data
from pipelines.training.loop import checkpoint_step

ORDER = ("clip", "frame_classifier", "vae", "unet", "raft")
TRAINERS = {
    "clip": ("pipelines.training.backbones.clip", "train_clip"),
    "frame_classifier": ("pipelines.training.backbones.classifier", "train_frame_classifier"),
    "vae": ("pipelines.training.backbones.vae", "train_vae"),
    "unet": ("pipelines.training.backbones.unet", "train_unet"),
    "raft": ("pipelines.training.backbones.raft", "train_raft"),
}


UPSTREAM = {"unet": ("clip", "vae")}  # roles whose saved weights a role is trained on


def upstream_weights(out: Path, role: str) -> dict[str, str]:
    """The weights identity of every role ``role`` is trained on (empty for the others)."""
    return {r: weights_id(out / r) for r in UPSTREAM.get(role, ()) if (out / r / "meta.json").is_file()}


def up_to_date(out: Path, role: str, data_key: str, loop: dict, architecture: dict | None = None) -> bool:
    """True when ``out/role`` holds a model trained on ``data_key`` with the settings ``loop``.

    When its meta.json records them (models trained since they were added), the role's ``architecture`` and the
    weights of the roles it was trained on (:data:`UPSTREAM`: the renderer UNet on the CLIP and the VAE) must match
    too, so that retraining the CLIP retrains the UNet.
    """
    meta_path = out / role / "meta.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    if meta.get("data_key") != data_key or meta.get("loop") != loop:
        return False
    if architecture is not None and meta.get("architecture", architecture) != architecture:
        return False
    recorded = meta.get("upstream", {})
    current = upstream_weights(out, role)
    return all(current.get(name) == weights for name, weights in recorded.items())


def load_presets(preset: str, overrides: list[str] | None = None) -> tuple[DemoBackbonesConfig, BackboneTrainingConfig]:
    """The architectures (``configs/backbones/<preset>.yaml``) and training settings (``train_<preset>.yaml``) of a
    backbones preset, with ``KEY=VALUE`` overrides: those prefixed ``arch.`` go to the architectures, the others to
    the training settings."""
    overrides = overrides or []
    arch_overrides = [o.removeprefix("arch.") for o in overrides if o.startswith("arch.")]
    loop_overrides = [o for o in overrides if not o.startswith("arch.")]
    arch = load_config(DemoBackbonesConfig, preset_path("backbones", preset), arch_overrides)
    return arch, load_config(BackboneTrainingConfig, preset_path("backbones", f"train_{preset}"), loop_overrides)


def train_backbones(
    data_root: str | Path,
    out: str | Path,
    arch: DemoBackbonesConfig,
    training: BackboneTrainingConfig,
    roles: tuple[str, ...] = ORDER,
    workdir: str | Path | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> dict:
    """Train ``roles`` in dependency order; return and write the run summary (``out/backbones.json``)."""
    unknown = sorted(set(roles) - set(ORDER))
    if unknown:
        raise ValueError(f"roles: unknown {unknown}; expected a subset of {list(ORDER)}.")
    out = Path(out)
    workdir = Path(workdir) if workdir is not None else out / ".checkpoints"
    data = load_backbone_data(data_root, cache_dir)
    summary_path = out / "backbones.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"roles": {}}
    summary.update({"data": str(Path(data_root).resolve()), "data_key": data.dataset.key, "device": device,
                    "architecture": asdict(arch)})  # fmt: skip
    for role in (r for r in ORDER if r in roles):
        loop, options = getattr(training, role), training.options(role)
        settings = {**asdict(loop), **options}  # what up_to_date compares
        architecture = to_dict(getattr(arch, role))  # as meta.json holds it: tuples become lists
        if up_to_date(out, role, data.dataset.key, settings, architecture):
            print(f"[train-backbones] {role}: up to date, skipped")
            continue
        module, name = TRAINERS[role]
        trainer = getattr(importlib.import_module(module), name)
        print(f"[train-backbones] {role}: training ({loop.steps} steps, batch {loop.batch_size})")
        start = time.time()
        # Checkpoints per (role, settings): the same settings resume, changed settings start afresh.
        key = config_hash(loop, arch) if not options else config_hash(loop, arch, options)
        finished = checkpoint_step(workdir / role / key) >= loop.steps  # only reloads its selected weights
        result = trainer(data, arch, loop, out, workdir / role / key, device=device, **options)
        _record_settings(out / role, {"loop": settings, "architecture": architecture,
                                      "upstream": upstream_weights(out, role)})  # fmt: skip
        if finished and summary["roles"].get(role, {}).get("loop") == settings:  # keep the run that trained it
            print(f"[train-backbones] {role}: reloaded its finished run; backbones.json keeps that run's times")
        else:
            summary["roles"][role] = {**result, "loop": settings, "wall_seconds": round(time.time() - start, 1)}
        out.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _record_settings(role_dir: Path, settings: dict) -> None:
    """Add the settings, architecture and upstream weights to the role's meta.json (what up_to_date compares)."""
    path = role_dir / "meta.json"
    meta = json.loads(path.read_text())
    meta.update(settings)
    path.write_text(json.dumps(meta, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines train-backbones``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines train-backbones",
        description="Train the demo-tier backbones (CLIP, frame classifier, VAE, renderer UNet, RAFT-small) on a "
        "simulated subject; resumable; skips roles that are up to date.",
    )
    parser.add_argument("--preset", default="demo", help="architecture preset (configs/backbones/<preset>.yaml) and "
                        "training preset (configs/backbones/train_<preset>.yaml); default demo")  # fmt: skip
    parser.add_argument("--data", required=True, help="simulated subject folder (python -m pipelines simulate)")
    parser.add_argument("--out", required=True, help="backbones folder: one sub-folder per role")
    parser.add_argument("--workdir", help="checkpoints (default OUT/.checkpoints)")
    parser.add_argument(
        "--roles", default=",".join(ORDER), help=f"comma-separated roles to train (default {','.join(ORDER)})"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--cache-dir", help="prepared-dataset cache (default $MINDREEL_CACHE)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the training settings (clip.steps=200 "
                        "vae.lr=0.002) or, prefixed with arch., of the architectures (arch.clip.vision_tower=resnet)")  # fmt: skip
    args = parser.parse_intermixed_args(argv)
    arch, training = load_presets(args.preset, args.overrides)
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    summary = train_backbones(args.data, args.out, arch, training, roles, args.workdir, args.device,
                              args.cache_dir)  # fmt: skip
    for role, info in summary["roles"].items():
        print(f"{role:<18} {info.get('wall_seconds', '?'):>8} s")
    return 0
