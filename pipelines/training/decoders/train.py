"""``python -m pipelines train --stage STAGE --config FILE``: train one stage-1 decoder.

Steps: (1) read the config and the overrides; (2) prepare the subject and its teacher features (cached);
(3) build the decoder and fit what it needs from training clips (the flow codebook); (4) run the resumable loop
(:func:`pipelines.training.loop.train`, on Accelerate), selecting the checkpoint on the validation split;
(5) ``save_pretrained`` into ``--out/STAGE`` with a ``meta.json`` that records the data, teachers, config and the
validation history.

The same command runs on a CPU, on one GPU (``--device cuda``) or on several with ``accelerate launch -m pipelines
train ...``. An interrupted run resumes from ``--workdir`` (default ``--out/.checkpoints``) when started again with
the same settings; a run whose output is up to date is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from pipelines.config import config_hash, to_dict
from pipelines.models.io import meta_matches
from pipelines.training.decoders.config import STAGES, DecodersConfig, load_decoders_config
from pipelines.training.decoders.data import DecoderData, load_decoder_data
from pipelines.training.decoders.stages import make_stage
from pipelines.training.loop import train


def load_data(config: DecodersConfig, data_root, backbones_dir, tier="demo", cache_dir=None, device="cpu"):
    """The decoders' data set for ``config`` (flow grid and stride from the flow stage)."""
    flow = config.stages["flow"]
    return load_decoder_data(
        data_root, config.data, backbones_dir, tier, flow.model.grid_size, flow.train.stride, cache_dir, device
    )


def train_stage(
    stage: str,
    config: DecodersConfig,
    data: DecoderData,
    out: str | Path,
    workdir: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """Train ``stage`` on ``data`` and save it to ``out/stage``; return its ``meta.json`` content.

    Raises
    ------
    ValueError
        For an unknown stage.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {list(STAGES)}, got {stage!r}.")
    settings = config.stages[stage]
    identity = {
        "stage": stage,
        "data_key": data.dataset.key,
        "teachers": data.teachers,
        "config": to_dict(settings),
        "data_config": to_dict(config.data),
    }
    run_hash = config_hash(identity)
    target = Path(out) / stage
    if meta_matches(target, {"run_hash": run_hash}, ("run_hash",)):
        print(f"{stage}: {target} is up to date (run {run_hash}); delete it to retrain.")
        return json.loads((target / "meta.json").read_text())
    runner = make_stage(stage, settings, data)
    torch.manual_seed(settings.loop.seed)  # the initialisation, as LoopConfig.seed promises
    model = runner.build().to(device)
    runner.prepare(model)
    workdir = Path(workdir) if workdir is not None else Path(out) / ".checkpoints"
    model, result = train(
        stage,
        model,
        runner.sample_batch,
        runner.loss,
        runner.validate,
        settings.loop,
        workdir / f"{stage}-{run_hash}",
        params=runner.param_groups(model),
    )
    meta = {
        **identity,
        "run_hash": run_hash,
        "best_step": result.best_step,
        "best_validation_score": result.best_score,
        "history": result.history,
        "seconds": result.seconds,
        "loop": asdict(settings.loop),
    }
    model.cpu().save_pretrained(target, meta=meta)
    return meta


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``train`` and ``evaluate-decoders`` share: config, subject, teachers, cache, overrides."""
    parser.add_argument("--config", default="demo", help="a YAML file or a preset of pipelines/configs/decoders")
    parser.add_argument("--data", required=True, help="the subject's root folder (CC2017 layout)")
    parser.add_argument("--backbones", help="the demo tier's folder (train-backbones --out)")
    parser.add_argument("--tier", default="demo", choices=("demo", "full"))
    parser.add_argument("--cache-dir", help="prepared data and teacher features (default $MINDREEL_CACHE)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, e.g. semantic.loop.steps=200")


def parse_data_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; the demo tier needs ``--backbones``."""
    args = parser.parse_args(argv)
    if args.tier == "demo" and not args.backbones:
        parser.error("--backbones is required with --tier demo (the folder train-backbones wrote)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a == "--stage" or a.startswith("--stage=") for a in argv) and any(
        a == "--preset" or a.startswith("--preset=") for a in argv
    ):
        from pipelines.workflow import main as workflow  # ``train --preset demo --out DIR``: every step, in order

        return workflow(argv)
    parser = argparse.ArgumentParser(
        prog="python -m pipelines train",
        description=__doc__.split("\n\n")[0] + " With --preset instead of --stage: every step from the simulated "
        "subject to an evaluated bundle (python -m pipelines train --preset demo --out DIR; see pipelines.workflow).",
    )
    parser.add_argument("--stage", required=True, choices=STAGES)
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="decoders are saved to OUT/STAGE")
    parser.add_argument("--workdir", help="checkpoints (default OUT/.checkpoints)")
    parser.add_argument("--device", default="cpu")
    args = parse_data_arguments(parser, argv)
    try:
        config = load_decoders_config(args.config, args.overrides)
        data = load_data(config, args.data, args.backbones, args.tier, args.cache_dir, args.device)
        meta = train_stage(args.stage, config, data, args.out, args.workdir, args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.stage}: best validation score {meta['best_validation_score']:.4f} at step {meta['best_step']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
