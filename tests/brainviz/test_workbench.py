"""brainviz.workbench: the app's computations on the tiny bundle, without a server."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from brainviz.workbench import Workbench, _upscale, clip_metrics, results_markdown
from pipelines.data.cifti import write_dtseries
from pipelines.data.video import read_video
from pipelines.reconstruct import load_bundle_clips

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wb(tiny_bundle, tmp_path_factory):
    return Workbench.from_bundle(tiny_bundle, workdir=tmp_path_factory.mktemp("wb"))


def test_summary_and_choices(wb):
    assert wb.simulated and wb.summary().startswith("**Simulated subject.**")
    assert wb.clip_choices()[2] == ("2: a tiny clip number 2", 2)
    assert wb.decoders == ["flow", "fmri-encoder", "motion", "semantic", "structure"]
    assert [key for _, key in wb.roi_choices()][:2] == ["early_visual", "dorsal_motion"]


def test_the_bundles_evaluation_in_markdown(wb, tiny_bundle, tmp_path):
    assert wb.evaluation_summary() is None  # the tiny bundle carries no results.json
    results = {
        "simulated": True,
        "n_clips": 50,
        "protocols": {
            "mind-animator": {"ssim": {"mean": 0.6371, "std": 0.1}, "2way_i": {"mean": 0.762, "chance": 0.75}}
        },
        "decoders": {
            "category_acc": 0.16,
            "category_chance": 1 / 12,
            "direction_agreement": 0.34,
            "direction_agreement_null_mean": 0.137,
            "direction_agreement_p": 0.001,
        },  # fmt: skip
        "ablation_tests": {
            "no_flow": {"ssim": {"worse": True, "paired_p": 0.01}, "epe": {"worse": True, "paired_p": 0.2}},
            "no_motion": {"ssim": {"worse": False, "paired_p": 0.01}},  # better without it: not listed as worse
        },
    }
    text = results_markdown(results)
    assert text.startswith("**Simulated subject**") and "50 test clips" in text
    assert "ssim 0.637, 2way_i 0.762 (chance 0.75)" in text
    assert "category of the reconstructions 0.16 (chance 0.0833)" in text
    assert "motion direction as the ground truth's 0.34 (permutation null 0.137, p 0.001)" in text
    assert "flow: ssim; motion: nothing significant" in text
    bad = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bad)
    (bad / "results.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"results.json: expected the bundle's evaluation as JSON"):
        Workbench.from_bundle(bad, workdir=tmp_path / "wb")
    (bad / "results.json").write_text(json.dumps(results))
    assert Workbench.from_bundle(bad, workdir=tmp_path / "wb").evaluation_summary() == text


@pytest.mark.parametrize("index", [-1, 4, 1.5, True, "0"])
def test_test_clip_out_of_range(wb, index):
    with pytest.raises(ValueError, match=r"expected a test-clip index in \[0, 3\]"):
        wb.test_clip(index)


def test_the_workbench_refuses_clips_of_another_shape(wb, tiny_bundle):
    clips = load_bundle_clips(tiny_bundle)
    clips.fmri = clips.fmri[:, :3]
    with pytest.raises(ValueError, match=r"expected fMRI windows of shape \(n, 5, 24\).*got \(4, 3, 24\)"):
        Workbench(wb.pipeline, clips)


def test_clip_metrics_against_numpy(wb):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
    flow, target = rng.normal(size=(2, 3, 2, 8, 8))
    m = clip_metrics(a, b, flow, target)
    mse = ((a.astype(float) - b) ** 2).reshape(4, -1).mean(axis=1)
    assert m["psnr"] == pytest.approx(np.mean(10 * np.log10(255**2 / mse)))
    assert m["flow_epe"] == pytest.approx(np.sqrt(((flow - target) ** 2).sum(axis=1)).mean())
    assert clip_metrics(a, a, None, None) == {"ssim": pytest.approx(1.0), "psnr": 100.0}  # capped


def test_reconstruct_writes_playable_videos_and_caches_the_intact_run(wb):
    clip = wb.test_clip(0)
    result = wb.reconstruct(clip, ablate=["motion"])
    assert result.ablated == ("motion",) and result.lesioned_voxels == 0
    video = read_video(result.files["reconstruction"])
    assert video.shape == (4, 256, 256, 3)  # 16 px upscaled x16
    truth = read_video(result.files["ground_truth"])
    error = np.abs(truth[:, 8::16, 8::16].astype(float) - clip.frames)  # block centres; H.264 is lossy (4:2:0)
    assert error.mean() < 4
    intact = wb.reconstruct(clip)
    assert result.intact == intact.metrics and intact.change == dict.fromkeys(intact.metrics, 0.0)
    with pytest.raises(ValueError, match="unknown \\['warp'\\]"):
        wb.reconstruct(clip, ablate=["warp"])
    with pytest.raises(ValueError, match="are neither ROI groups nor Glasser areas"):
        wb.reconstruct(clip, lesion=["not_a_region"])


def test_lesion_grayordinates_are_the_bundle_voxels_in_the_groups(wb):
    np.testing.assert_array_equal(wb.lesion_grayordinates(["early_visual"]), wb.pipeline.voxel_grayordinates)
    assert wb.lesion_grayordinates(["tpoj"]).size == 0 and wb.lesion_grayordinates([]).size == 0


def test_upscale_keeps_even_sizes():
    frames = np.zeros((2, 15, 15, 3), np.uint8)
    assert _upscale(frames).shape == (2, 254, 254, 3)
    assert _upscale(np.zeros((1, 300, 300, 3), np.uint8)).shape == (1, 300, 300, 3)


def test_flow_figure_with_and_without_ground_truth(wb, tmp_path):
    clip = wb.test_clip(1)
    result = wb.reconstruct(clip, write_videos=False)
    assert isinstance(wb.flow_figure(result), Figure)
    upload = wb.test_clip(1)
    upload.flow = None
    assert isinstance(wb.flow_figure(wb.reconstruct(upload, write_videos=False)), Figure)


@pytest.mark.parametrize("decoder", ["semantic", "structure", "motion", "flow", "fmri-encoder"])
def test_saliency_maps_are_gradients_of_the_objective(wb, decoder):
    clip = wb.test_clip(2)
    values, delta = wb.voxel_map("attribution", decoder, clip, "saliency")
    assert values.shape == (24,) and delta is None and np.isfinite(values).all() and values.max() > 0
    # independent check: central finite differences of the same objective, |df/dx| summed over the window's TRs
    inputs = wb._decoder_inputs(decoder, clip.fmri)
    objective = wb._objective(decoder, clip, inputs)
    eps, flat = 1e-2, inputs.reshape(-1).astype(np.float32)
    grad = np.zeros(flat.size)
    with torch.no_grad():
        for i in range(flat.size):
            up, down = flat.copy(), flat.copy()
            up[i] += eps
            down[i] -= eps
            f_up = objective(torch.from_numpy(up.reshape(inputs.shape))).item()
            f_down = objective(torch.from_numpy(down.reshape(inputs.shape))).item()
            grad[i] = (f_up - f_down) / (2 * eps)
    summed = np.abs(grad).reshape(-1, 24).sum(axis=0)
    np.testing.assert_allclose(values, summed, rtol=0.05, atol=0.02 * summed.max())


def test_brain_map_attribution_attention_and_errors(wb):
    clip = wb.test_clip(0)
    result = wb.brain_map(clip, decoder="structure", method="integrated_gradients", space="fsaverage5", view="medial")
    assert result.delta is not None and np.isfinite(result.delta)
    assert np.isfinite(result.grayordinates).sum() == 24 and result.grayordinates.shape == (91282,)
    assert list(result.roi_table.index)[0] == "structure (integrated_gradients)" and len(result.roi_table) == 6
    assert "simulated subject" in result.title
    attention = wb.brain_map(clip, kind="attention", decoder="fmri-encoder", method="raw", roi_decoders=[])
    assert list(attention.roi_table.index) == ["fmri-encoder (attention)"]
    for kwargs, match in [
        ({"kind": "weights"}, "map: expected one of"),
        ({"decoder": "renderer"}, "decoder: expected one of this bundle's decoders"),
        ({"method": "lime"}, "attribution method: expected one of"),
        ({"kind": "attention", "decoder": "semantic"}, "only the fmri-encoder"),
        ({"kind": "attention", "decoder": "fmri-encoder", "method": "saliency"}, "attention mode: expected"),
        ({"space": "mni"}, "space: expected one of"),
        ({"view": "top"}, "view: expected one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            wb.brain_map(clip, **kwargs)


def test_save_figure_formats(wb):
    clip = wb.test_clip(0)
    result = wb.brain_map(clip, roi_decoders=[])
    html = wb.save_figure(result.figure, "map")
    assert html.suffix == ".html" and "plotly" in html.read_text()[:200_000].lower()
    csv = wb.save_figure(result.roi_table, "roi")
    pd.testing.assert_frame_equal(pd.read_csv(csv, index_col=0), result.roi_table, check_names=False)
    png = wb.save_figure(wb.flow_figure(wb.reconstruct(clip, write_videos=False)), "flow")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_upload_window_takes_the_bundle_voxels_detrended_and_zscored(wb, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 91282)).astype(np.float32)
    path = write_dtseries(tmp_path / "run.dtseries.nii", data, tr=2.0)
    clip = wb.upload_window(path, 4)
    assert clip.fmri.shape == (5, 24) and clip.frames is None and clip.label == "run.dtseries.nii, TR 4"
    # independent reference: numpy polynomial detrend (degree 4) then z-score over time, volumes 2..6
    cols = data[:, wb.pipeline.voxel_grayordinates]
    t = np.arange(12)
    fitted = np.stack([np.polyval(np.polyfit(t, cols[:, j].astype(float), 4), t) for j in range(24)], axis=1)
    resid = cols - fitted
    z = (resid - resid.mean(axis=0)) / resid.std(axis=0)
    np.testing.assert_allclose(clip.fmri, z[2:7], atol=1e-4)
    for tr in (1, 10, 2.5):
        with pytest.raises(ValueError, match=r"TR: expected an integer volume in \[2, 9\]"):
            wb.upload_window(path, tr)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wb.upload_window(tmp_path / "missing.dtseries.nii", 4)
