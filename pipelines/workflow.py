"""``python -m pipelines train --preset demo --out DIR``: every step that makes a bundle, from nothing, in order.

Steps (each is also a command of its own, printed as it runs):

1. ``simulate``  — the simulated subject in the CC2017 layout (``DIR/data``);
2. ``prepare``   — the CC2017 reader's prepared data set (``DIR/cache``);
3. ``backbones`` — the demo-tier backbones (``DIR/backbones``; ``train-backbones``);
4. ``features``  — the teacher features the decoders learn (``DIR/cache``);
5. ``decoders``  — the five stage-1 decoders (``DIR/decoders``; ``train --stage ...``);
6. ``bundle``    — the bundle (``DIR/bundle``; ``build-bundle``);
7. ``tune``      — its rendering settings chosen on validation clips (``DIR/tuning``; ``tune-bundle``);
8. ``evaluate``  — its test clips under each protocol (``DIR/evaluation``; ``evaluate``); ``results.json`` is then
   copied into the bundle, the run's command is recorded in ``bundle.json`` and the bundle is sealed again.

The settings are data: ``pipelines/configs/workflow/<preset>.yaml``, one section per step. ``DIR/workflow.json``
records each finished step: its settings, a fingerprint (its settings, those of the preset files it names, and the
fingerprint of the step before), the equivalent command and its wall time. A step whose fingerprint matches is
skipped, so running the same command again does nothing and an interrupted run goes on from the step it was in (the
training steps resume from their own checkpoints). A changed section, or an edited preset file (``configs/twin``,
``configs/backbones``, ``configs/decoders``), re-runs its step and every step after it; ``--from STEP`` re-runs from
a step.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pipelines.config import config_hash, load_config, preset_path, read_json, to_dict
from pipelines.training.decoders.config import STAGES

RESULT_FILES = ("results.json", "results.md")  # what evaluate writes and the bundle then carries
STEPS = ("simulate", "prepare", "backbones", "features", "decoders", "bundle", "tune", "evaluate")
RECORD = "workflow.json"


@dataclass(frozen=True)
class SimulateStep:
    preset: str = "demo"  # configs/twin/<preset>.yaml
    seed: int = 0


@dataclass(frozen=True)
class BackbonesStep:
    preset: str = "demo"  # configs/backbones/<preset>.yaml and train_<preset>.yaml


@dataclass(frozen=True)
class DecodersStep:
    config: str = "demo"  # configs/decoders/<config>.yaml
    stages: tuple[str, ...] = STAGES


@dataclass(frozen=True)
class BundleStep:
    n_test: int | None = None  # test clips in the bundle (None: all)
    weights_dtype: str = "float32"
    clips_dtype: str = "float32"  # the stored test fMRI and flows


@dataclass(frozen=True)
class TuneStep:
    grid: tuple[str, ...] = ("flow_weight=0,0.5,1",)  # FIELD=V1,V2 (a product grid)
    objective: str = "ssim"
    protocol: str = "mind-animator"
    limit: int = 100  # validation clips


@dataclass(frozen=True)
class EvaluateStep:
    protocols: tuple[str, ...] = ("mind-animator",)  # the first carries the ablations
    limit: int | None = None  # test clips of the bundle (None: all it holds)
    ablations: bool = True


@dataclass(frozen=True)
class WorkflowConfig:
    simulate: SimulateStep = field(default_factory=SimulateStep)
    backbones: BackbonesStep = field(default_factory=BackbonesStep)
    decoders: DecodersStep = field(default_factory=DecodersStep)
    bundle: BundleStep = field(default_factory=BundleStep)
    tune: TuneStep = field(default_factory=TuneStep)
    evaluate: EvaluateStep = field(default_factory=EvaluateStep)


def load_workflow(preset: str, overrides: list[str] | None = None) -> WorkflowConfig:
    """The preset ``pipelines/configs/workflow/<preset>.yaml`` (or a YAML file) with ``KEY=VALUE`` overrides."""
    source = Path(preset) if preset.endswith((".yaml", ".yml")) else preset_path("workflow", preset)
    config = load_config(WorkflowConfig, source, overrides)
    unknown = sorted(set(config.decoders.stages) - set(STAGES))
    if unknown:
        raise ValueError(f"{source}: decoders.stages: unknown {unknown}; expected a subset of {list(STAGES)}.")
    return config


class Layout:
    """Where each step writes, under the run's folder: ``data``, ``cache``, ``backbones``, ``decoders``, ``bundle``,
    ``tuning`` and ``evaluation`` (each a sub-folder of ``root`` of that name)."""

    FOLDERS = ("data", "cache", "backbones", "decoders", "bundle", "tuning", "evaluation")
    data: Path
    cache: Path
    backbones: Path
    decoders: Path
    bundle: Path
    tuning: Path
    evaluation: Path

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for name in self.FOLDERS:
            setattr(self, name, self.root / name)


def step_commands(step: str, config: WorkflowConfig, at: Layout) -> list[tuple[str, list[str]]]:
    """The ``python -m pipelines`` commands (name, arguments) a step runs, or is equivalent to."""
    data = ["--data", str(at.data), "--cache-dir", str(at.cache)]
    teachers = [*data, "--backbones", str(at.backbones), "--config", config.decoders.config]
    if step == "simulate":
        s = config.simulate
        return [("simulate", ["--preset", s.preset, "--seed", str(s.seed), "--out", str(at.data)])]
    if step in ("prepare", "features"):  # done on the way by the commands after them; run here on their own
        return []
    if step == "backbones":
        return [("train-backbones", ["--preset", config.backbones.preset, *data, "--out", str(at.backbones)])]
    if step == "decoders":
        return [("train", ["--stage", s, *teachers, "--out", str(at.decoders)]) for s in config.decoders.stages]
    if step == "bundle":
        b = config.bundle
        argv = [*teachers, "--decoders", str(at.decoders), "--out", str(at.bundle), "--weights-dtype", b.weights_dtype,
                "--clips-dtype", b.clips_dtype]  # fmt: skip
        return [("build-bundle", argv + (["--n-test", str(b.n_test)] if b.n_test is not None else []))]
    if step == "tune":
        t = config.tune
        grid = [arg for point in t.grid for arg in ("--grid", point)]
        argv = ["--bundle", str(at.bundle), *teachers, *grid, "--objective", t.objective, "--protocol", t.protocol]
        return [("tune-bundle", argv + ["--limit", str(t.limit), "--out", str(at.tuning)])]
    if step == "evaluate":
        e = config.evaluate
        argv = ["--bundle", str(at.bundle), "--protocol", *e.protocols, "--backbones", str(at.backbones)]
        argv += ["--limit", str(e.limit)] if e.limit is not None else []
        argv += ["--ablations"] if e.ablations else []
        return [("evaluate", argv + ["--cache-dir", str(at.cache), "--out", str(at.evaluation)])]
    raise ValueError(f"step: expected one of {list(STEPS)}, got {step!r}.")


def preset_settings(config: WorkflowConfig) -> dict[str, Any]:
    """The settings the workflow's presets name, read from their files: ``twin`` (the simulate step's
    ``configs/twin/<preset>.yaml``), ``backbones`` (``configs/backbones/<preset>.yaml`` and ``train_<preset>.yaml``)
    and ``decoders`` (``configs/decoders/<config>.yaml``). Part of the fingerprints, so that editing one of those
    files re-runs the steps that read it."""
    from pipelines.data.twin.simulate import TwinConfig
    from pipelines.training.backbones.train_all import load_presets
    from pipelines.training.decoders.config import load_decoders_config

    architecture, training = load_presets(config.backbones.preset)  # as train-backbones reads them
    return {
        "twin": to_dict(load_config(TwinConfig, preset_path("twin", config.simulate.preset))),
        "backbones": {"architecture": to_dict(architecture), "training": to_dict(training)},
        "decoders": to_dict(load_decoders_config(config.decoders.config)),
    }


def fingerprints(config: WorkflowConfig) -> dict[str, str]:
    """Each step's fingerprint: its settings (with those of the preset files it reads, :func:`preset_settings`)
    chained to the fingerprint of the step before."""
    presets = preset_settings(config)
    sections = {
        "simulate": [to_dict(config.simulate), presets["twin"]],
        "prepare": {},
        "backbones": [to_dict(config.backbones), presets["backbones"]],
        "features": [config.decoders.config, presets["decoders"]],
        "decoders": [to_dict(config.decoders), presets["decoders"]],
        "bundle": config.bundle,
        "tune": config.tune,
        "evaluate": config.evaluate,
    }
    out, previous = {}, ""
    for step in STEPS:
        previous = out[step] = config_hash(step, sections[step], previous)
    return out


def read_record(at: Layout) -> dict[str, Any]:
    """``workflow.json`` of a run folder (empty for a new folder).

    Raises
    ------
    ValueError
        If the file is not JSON of this format (it is left as it is).
    """
    path = at.root / RECORD
    if not path.is_file():
        return {"steps": {}}
    record = read_json(path, "the JSON record of a workflow run")
    if not isinstance(record, dict) or not isinstance(record.get("steps"), dict):
        raise ValueError(f"{path}: expected a JSON object with a 'steps' mapping, got {type(record).__name__}.")
    return record


def _write_record(at: Layout, record: dict[str, Any]) -> None:
    from pipelines.evaluation.evaluate import write_json  # whole or not at all (a temporary name, then renamed)

    write_json(at.root / RECORD, record, indent=2)


def _call(command: str, argv: list[str]) -> None:
    """Run ``python -m pipelines COMMAND ARGV`` in this process; raise if it fails."""
    from pipelines.__main__ import main as dispatch

    code = dispatch([command, *argv])
    if code != 0:
        raise RuntimeError(f"python -m pipelines {command} exited with {code} (its message is above).")


def _clear(path: Path) -> None:
    """Remove a step's output folder left by an earlier, unfinished or outdated, run of the step."""
    if path.is_dir():
        shutil.rmtree(path)


def run_step(step: str, config: WorkflowConfig, at: Layout, device: str, invocation: str) -> None:
    """Run one step (see the module docstring)."""
    commands = step_commands(step, config, at)
    if step == "simulate":
        _clear(at.data)  # simulate writes into an empty folder; a half-written subject is redone
        _call(*commands[0])
    elif step == "prepare":
        from pipelines.training.backbones.data import load_backbone_data

        load_backbone_data(at.data, at.cache)
    elif step == "backbones":
        _call(commands[0][0], [*commands[0][1], "--device", device])
    elif step == "features":
        from pipelines.training.decoders.config import load_decoders_config
        from pipelines.training.decoders.train import load_data

        load_data(load_decoders_config(config.decoders.config), at.data, at.backbones, "demo", at.cache, device)
    elif step == "decoders":
        for command, argv in commands:  # each stage skips itself when up to date and resumes when interrupted
            _call(command, [*argv, "--device", device])
    elif step == "bundle":
        _clear(at.bundle)
        _call(*commands[0])
    elif step == "tune":
        _call(*commands[0])
    elif step == "evaluate":
        _evaluate(commands[0], at, device, invocation)


def _evaluate(command: tuple[str, list[str]], at: Layout, device: str, invocation: str) -> None:
    """Evaluate the bundle, then put ``results.json`` into it, record the run's command and seal it again."""
    from pipelines.bundle import record_command
    from pipelines.reconstruct import seal_bundle

    for name in RESULT_FILES:  # an earlier evaluation's results are not part of what is scored
        (at.bundle / name).unlink(missing_ok=True)
    seal_bundle(at.bundle)
    _call(command[0], [*command[1], "--device", device])
    for name in RESULT_FILES:
        shutil.copy2(at.evaluation / name, at.bundle / name)
    seal_bundle(at.bundle)
    record_command(at.bundle, "train", shlex.split(invocation))


def run_workflow(
    preset: str,
    out: str | Path,
    overrides: list[str] | None = None,
    device: str = "cpu",
    start: str | None = None,
    stop: str | None = None,
    invocation: str | None = None,
) -> dict[str, Any]:
    """Run the steps of ``preset`` into ``out`` (skipping those up to date); return the ``workflow.json`` record.

    ``start`` re-runs from that step even when it is up to date; ``stop`` ends after that step.

    Raises
    ------
    ValueError
        For an unknown preset, step or setting, or an ``out`` that is a file or holds an unreadable record.
    RuntimeError
        When a step fails; the steps before it stay done, so the same command goes on from it.
    """
    for name, value in (("--from", start), ("--until", stop)):
        if value is not None and value not in STEPS:
            raise ValueError(f"{name}: expected one of {list(STEPS)}, got {value!r}.")
    config = load_workflow(preset, overrides)
    at = Layout(out)
    if at.root.exists() and not at.root.is_dir():
        raise ValueError(f"--out {at.root}: expected a folder for the run, got an existing file.")
    record = read_record(at)
    at.root.mkdir(parents=True, exist_ok=True)
    invocation = invocation or f"--preset {preset} --out {at.root}"
    record.update({"preset": preset, "overrides": list(overrides or []), "config": to_dict(config)})
    prints = fingerprints(config)
    last = STEPS.index(stop) if stop is not None else len(STEPS) - 1
    forced = STEPS.index(start) if start is not None else len(STEPS)
    todo = STEPS[: last + 1]
    bar = tqdm(todo, desc="workflow", unit="step", position=0, leave=True)
    for i, step in enumerate(bar):
        bar.set_description(f"workflow [{i + 1}/{len(todo)}] {step}")
        done = record["steps"].get(step, {})
        if i < forced and done.get("fingerprint") == prints[step]:
            tqdm.write(f"[workflow] {step}: up to date, skipped")
            continue
        commands = [f"python -m pipelines {c} {shlex.join(a)}" for c, a in step_commands(step, config, at)]
        tqdm.write(f"[workflow] {step}: running" + "".join(f"\n    {c}" for c in commands))
        for later in STEPS[i:]:  # this step and those after it are outdated until they finish again
            record["steps"].pop(later, None)
        _write_record(at, record)
        began = time.time()
        try:
            run_step(step, config, at, device, invocation)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            bar.close()
            raise RuntimeError(
                f"workflow step {step!r} failed: {err}\nThe steps before it are kept; run the same command again to "
                f"go on from {step!r}."
            ) from err
        record["steps"][step] = {
            "fingerprint": prints[step],
            "commands": commands,
            "seconds": round(time.time() - began, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_record(at, record)
    bar.close()
    return record


def summary(record: dict[str, Any]) -> str:
    """A table of the recorded steps and their wall times."""
    rows = [f"{'step':<10} {'seconds':>9}"]
    total = 0.0
    for step in STEPS:
        if step in record["steps"]:
            seconds = record["steps"][step]["seconds"]
            total += seconds
            rows.append(f"{step:<10} {seconds:>9.1f}")
    rows.append(f"{'total':<10} {total:>9.1f}  ({total / 60:.1f} min, each step's last run)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m pipelines train --preset PRESET",
        description="Every step that makes a bundle (simulate, prepare, backbones, features, decoders, bundle, tune, "
        "evaluate), skipping the steps that are up to date; an interrupted run goes on where it stopped.",
    )
    parser.add_argument("--preset", required=True, help="pipelines/configs/workflow/<preset>.yaml (demo, tiny) or a "
                        "YAML file")  # fmt: skip
    parser.add_argument("--out", required=True, help="the run's folder (data/, cache/, backbones/, decoders/, "
                        "bundle/, tuning/, evaluation/, workflow.json)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device for training and evaluation (default cpu)")
    parser.add_argument("--from", dest="start", choices=STEPS, help="re-run from this step even if it is up to date")
    parser.add_argument("--until", dest="stop", choices=STEPS, help="stop after this step")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the preset, e.g. bundle.n_test=20")
    args = parser.parse_intermixed_args(argv)
    try:
        record = run_workflow(
            args.preset, args.out, args.overrides, args.device, args.start, args.stop, shlex.join(argv)
        )
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(record))
    bundle = Layout(Path(args.out)).bundle
    if "evaluate" in record["steps"]:
        print(f"bundle: {bundle} (open it with: python app.py --bundle {bundle})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
