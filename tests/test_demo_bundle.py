"""The demo bundle shipped in assets/demo: what `python app.py` opens on a fresh clone."""

from __future__ import annotations

import json

import numpy as np
import pytest

import app
from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips

DEMO = app.DEFAULT_BUNDLE
MAX_BYTES = 60 * 10**6  # the shipped bundle's budget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest():
    path = DEMO / "bundle.json"
    assert path.is_file(), f"{path} is missing: the repository ships the demo bundle there"
    return json.loads(path.read_text())


def test_the_demo_bundle_is_small_simulated_and_says_how_it_was_made(manifest):
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < MAX_BYTES, f"assets/demo is {size / 1e6:.1f} MB; expected under {MAX_BYTES / 1e6:.0f} MB"
    assert manifest["info"]["simulated"] is True  # it must be labelled as simulated wherever it is shown
    assert manifest["weights_dtype"] == "float16"
    commands = [c["command"] for c in manifest["provenance"]["commands"]]
    assert commands[0].startswith("python -m pipelines build-bundle ")
    assert commands[-1].startswith("python -m pipelines train --preset demo --out ")  # made by the one command
    assert all(len(c["git_revision"] or "") == 40 for c in manifest["provenance"]["commands"])
    assert not any(c["git_dirty"] for c in manifest["provenance"]["commands"])  # from committed code
    assert manifest["tuning"]["split"] == "val"  # settings chosen on validation clips, never test
    # sealed: every file's SHA-256 is recorded, and opening the bundle (next test) checks them
    files = {p.relative_to(DEMO).as_posix() for p in DEMO.rglob("*") if p.is_file()} - {"bundle.json"}
    assert set(manifest["files"]) == files


def test_the_demo_bundle_carries_its_evaluation(manifest):
    results = json.loads((DEMO / "results.json").read_text())
    assert "results.json" in manifest["files"]  # sealed with the weights
    assert results["simulated"] is True and results["n_clips"] == len(load_bundle_clips(DEMO))
    assert {"mind-animator", "brainnrds"} <= set(results["protocols"]) and "no_flow" in results["ablation_tests"]
    assert {"category_acc", "direction_agreement", "direction_agreement_p"} <= set(results["decoders"])


def test_the_demo_bundle_opens_and_reconstructs_a_clip(manifest):
    pipeline = VideoReconstructionPipeline.from_pretrained(DEMO)
    clips = load_bundle_clips(DEMO)
    assert len(clips) >= 20 and clips.fmri.shape[1:] == (pipeline.info.window, pipeline.info.n_voxels)
    out = pipeline(clips.fmri[:1])
    size = pipeline.info.image_size
    assert out.frames.shape == (1, pipeline.info.n_frames, size, size, 3)
    assert out.frames.std() > 5 and np.isfinite(out.flow).all()  # a video, not a blank


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory):
    """The real app on the shipped demo bundle, served and driven through gradio_client."""
    from gradio_client import Client

    from brainviz.workbench import Workbench
    from tests.test_app import _free_port

    workbench = Workbench.from_bundle(DEMO, workdir=tmp_path_factory.mktemp("demo-app"))
    demo = app.build_demo(workbench)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                show_error=True, allowed_paths=[str(workbench.workdir)])  # fmt: skip
    yield Client(demo.local_url, verbose=False, download_files=False, analytics_enabled=False)
    demo.close()


def test_the_app_on_the_demo_bundle(demo_client, tmp_path):
    from gradio_client import handle_file

    from tests.test_app import metrics_table

    def reconstruct(ablate=(), lesion=()):
        return demo_client.predict("test clip", 3, None, 2, list(ablate), list(lesion), api_name="/reconstruct")

    truth, video, markdown, flow, _ = reconstruct()
    assert truth["path"].endswith(".mp4") and video["path"].endswith(".mp4") and flow["type"] == "matplotlib"
    intact = metrics_table(markdown)
    assert 0 < intact["ssim"][0] < 1 and intact["flow_epe"][0] > 0
    for ablation in ("semantic", "structure", "motion", "flow", "dependent_noise"):
        _, _, ablated, _, _ = reconstruct(ablate=[ablation])
        table = metrics_table(ablated)
        assert f"Ablated: {ablation};" in ablated and table["ssim"][1] == intact["ssim"][0]
        assert table["ssim"][2] != 0 or table["psnr"][2] != 0, ablation  # another video than the intact one
    assert (
        table["flow_epe"][2] == 0
    )  # with flow guidance off the flow is still decoded and scored, it only stops steering
    _, _, lesioned, _, _ = reconstruct(lesion=["dorsal_motion"])
    count = int(lesioned.split("(")[1].split(" voxels")[0])
    assert count > 0 and any(c != 0 for _, _, c in metrics_table(lesioned).values())
    semantic = demo_client.predict("test clip", 3, None, 2, "attribution: Saliency", "semantic", "fsLR-32k inflated",
                                   "lateral", api_name="/show_map")  # fmt: skip
    motion = demo_client.predict("test clip", 3, None, 2, "attribution: Saliency", "motion", "fsLR-32k inflated",
                                 "lateral", api_name="/show_map")  # fmt: skip
    assert semantic[0]["plot"] != motion[0]["plot"] and "simulated subject" in semantic[3]
    with pytest.raises(Exception, match=r"Invalid file type.*\.nii"):  # Gradio refuses other file types itself
        demo_client.predict(
            "uploaded run", 3, handle_file(str(DEMO / "bundle.json")), 2, [], [], api_name="/reconstruct"
        )
    bad = tmp_path / "run.nii"
    bad.write_text("not a CIFTI file")
    with pytest.raises(Exception, match="is not a CIFTI-2 file"):
        demo_client.predict("uploaded run", 3, handle_file(str(bad)), 2, [], [], api_name="/reconstruct")
    assert metrics_table(reconstruct()[2]) == intact  # the server keeps serving, the same clip gives the same video
