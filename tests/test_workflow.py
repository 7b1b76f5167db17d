"""``python -m pipelines train --preset PRESET --out DIR`` (pipelines/workflow.py): every step on the tiny preset for
real, and the orchestration (skipping, resuming, re-running, errors) with stand-in steps."""

import json

import pytest

from pipelines import workflow
from pipelines.__main__ import main as dispatch
from pipelines.reconstruct import VideoReconstructionPipeline, file_sha256


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny workflow run once for real (about 80 s on 2 cores), through the ``train`` command."""
    out = tmp_path_factory.mktemp("workflow") / "run"
    assert dispatch(["train", "--preset", "tiny", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_every_step_runs_and_the_bundle_carries_its_results_and_command(run):
    record = json.loads((run / workflow.RECORD).read_text())
    assert list(record["steps"]) == list(workflow.STEPS)
    assert all(step["seconds"] >= 0 and step["fingerprint"] for step in record["steps"].values())
    assert record["steps"]["decoders"]["commands"][0].startswith("python -m pipelines train --stage semantic")
    bundle = run / "bundle"
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["files"]["results.json"] == file_sha256(bundle / "results.json")  # sealed with its results
    assert (bundle / "results.json").read_bytes() == (run / "evaluation" / "results.json").read_bytes()
    commands = [c["command"] for c in manifest["provenance"]["commands"]]
    assert commands[0].startswith("python -m pipelines build-bundle") and "--weights-dtype float16" in commands[0]
    assert commands[1].startswith("python -m pipelines tune-bundle")
    assert commands[-1] == f"python -m pipelines train --preset tiny --out {run}"
    results = json.loads((bundle / "results.json").read_text())
    assert results["simulated"] is True and results["n_clips"] == 4 and "no_flow" in results["ablations"]
    assert 0.0 <= results["decoders"]["direction_agreement"] <= 1.0 and "category_acc" in results["decoders"]
    assert manifest["tuning"]["split"] == "val"  # chosen on validation clips
    pipeline = VideoReconstructionPipeline.from_pretrained(bundle)  # verifies every file's SHA-256
    assert pipeline.info.simulated


@pytest.mark.slow
def test_running_again_skips_every_step(run, capsys):
    before = (run / workflow.RECORD).read_text()
    assert workflow.main(["--preset", "tiny", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert all(f"[workflow] {step}: up to date, skipped" in out for step in workflow.STEPS)
    assert json.loads((run / workflow.RECORD).read_text())["steps"] == json.loads(before)["steps"]
    assert "total" in out and f"python app.py --bundle {run / 'bundle'}" in out


@pytest.mark.slow
def test_a_changed_section_reruns_its_step_and_those_after_it_only(run, capsys):
    before = json.loads((run / workflow.RECORD).read_text())["steps"]
    assert workflow.main(["--preset", "tiny", "--out", str(run), "evaluate.limit=2"]) == 0
    out = capsys.readouterr().out
    assert "[workflow] evaluate: running" in out and "--limit 2" in out
    assert all(f"[workflow] {s}: up to date, skipped" in out for s in workflow.STEPS[:-1])
    after = json.loads((run / workflow.RECORD).read_text())["steps"]
    assert all(after[s] == before[s] for s in workflow.STEPS[:-1]) and after["evaluate"] != before["evaluate"]
    assert json.loads((run / "bundle" / "results.json").read_text())["n_clips"] == 2
    VideoReconstructionPipeline.from_pretrained(run / "bundle")  # sealed again after the new results
    provenance = json.loads((run / "bundle" / "bundle.json").read_text())["provenance"]["commands"]
    assert provenance[-1]["command"].endswith("evaluate.limit=2")


# --- orchestration with stand-in steps (no training) ---------------------------------------------------------------


@pytest.fixture
def stand_in(monkeypatch):
    """Replace every step by a recorder; ``fail`` names a step that raises as a failing command would."""
    calls, fail = [], set()

    def fake(step, config, at, device, invocation):
        calls.append(step)
        if step in fail:
            raise RuntimeError(f"python -m pipelines {step} exited with 1 (its message is above).")

    monkeypatch.setattr(workflow, "run_step", fake)
    return calls, fail


def test_an_interrupted_run_goes_on_from_the_failed_step(tmp_path, stand_in, capsys):
    calls, fail = stand_in
    fail.add("decoders")
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "workflow step 'decoders' failed" in err and "run the same command again to go on from 'decoders'" in err
    assert calls == list(workflow.STEPS[:5])
    record = json.loads((tmp_path / workflow.RECORD).read_text())
    assert list(record["steps"]) == list(workflow.STEPS[:4])  # the failed step and those after it are not done
    fail.clear()
    calls.clear()
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path)]) == 0
    assert calls == list(workflow.STEPS[4:])
    assert list(json.loads((tmp_path / workflow.RECORD).read_text())["steps"]) == list(workflow.STEPS)


def test_from_and_until_choose_the_steps(tmp_path, stand_in):
    calls, _ = stand_in
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path), "--until", "backbones"]) == 0
    assert calls == ["simulate", "prepare", "backbones"]
    calls.clear()
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path)]) == 0
    assert calls == list(workflow.STEPS[3:])
    calls.clear()
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path), "--from", "tune"]) == 0
    assert calls == ["tune", "evaluate"]
    calls.clear()
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path), "decoders.config=tiny"]) == 0
    assert calls == ["features", "decoders", "bundle", "tune", "evaluate"]  # the features follow the decoders' config


def test_editing_a_preset_file_reruns_the_steps_that_read_it(tmp_path, stand_in, monkeypatch):
    calls, _ = stand_in
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path)]) == 0
    calls.clear()
    from pipelines.training.backbones import train_all  # reads the backbones presets for train-backbones

    real = train_all.preset_path
    edited = tmp_path / "train_demo.yaml"
    edited.write_text(real("backbones", "train_demo").read_text() + "\nclassifier_blur: 0.5\n")
    monkeypatch.setattr(
        train_all, "preset_path", lambda kind, name: edited if name == "train_demo" else real(kind, name)
    )
    assert workflow.main(["--preset", "demo", "--out", str(tmp_path)]) == 0
    assert calls == list(workflow.STEPS[2:])  # the workflow's own section did not change; the file it names did


def test_the_demo_preset_names_the_commands_that_made_the_shipped_bundle(tmp_path):
    config = workflow.load_workflow("demo")
    at = workflow.Layout(tmp_path)
    (command, argv), *_ = workflow.step_commands("bundle", config, at)
    assert command == "build-bundle" and argv[argv.index("--n-test") + 1] == "50"
    assert argv[argv.index("--weights-dtype") + 1] == "float16" and argv[argv.index("--clips-dtype") + 1] == "float16"
    (command, argv), *_ = workflow.step_commands("tune", config, at)
    assert command == "tune-bundle" and argv.count("--grid") == 2 and argv[argv.index("--objective") + 1] == "ssim"
    stages = [argv[argv.index("--stage") + 1] for _, argv in workflow.step_commands("decoders", config, at)]
    assert stages == ["semantic", "structure", "motion", "flow", "fmri-encoder"]


def test_errors_name_what_was_expected(tmp_path, stand_in, capsys):
    calls, _ = stand_in
    assert workflow.main(["--preset", "nope", "--out", str(tmp_path)]) == 1
    assert "Unknown workflow preset 'nope'; expected one of ['demo', 'tiny']" in capsys.readouterr().err
    assert workflow.main(["--preset", "tiny", "--out", str(tmp_path), "bundle.n_tset=3"]) == 1
    assert "unknown key(s) ['n_tset']" in capsys.readouterr().err
    assert workflow.main(["--preset", "tiny", "--out", str(tmp_path), "decoders.stages=[semantic,vision]"]) == 1
    assert "decoders.stages: unknown ['vision']" in capsys.readouterr().err
    file = tmp_path / "a-file"
    file.write_text("keep me")
    assert workflow.main(["--preset", "tiny", "--out", str(file)]) == 1
    assert "expected a folder for the run, got an existing file" in capsys.readouterr().err
    assert file.read_text() == "keep me"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / workflow.RECORD).write_text("{not json")
    assert workflow.main(["--preset", "tiny", "--out", str(tmp_path / "run")]) == 1
    assert "workflow.json: expected the JSON record of a workflow run" in capsys.readouterr().err
    assert (tmp_path / "run" / workflow.RECORD).read_text() == "{not json"  # left as it was
    assert calls == []  # nothing ran
    with pytest.raises(SystemExit):
        workflow.main(["--preset", "tiny", "--out", str(tmp_path), "--from", "render"])
    assert "invalid choice: 'render'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--until: expected one of \['simulate'"):
        workflow.run_workflow("tiny", tmp_path / "x", stop="render")


def test_train_needs_a_stage_or_a_preset(capsys):
    with pytest.raises(SystemExit):
        dispatch(["train", "--out", "somewhere"])
    assert "--stage" in capsys.readouterr().err
