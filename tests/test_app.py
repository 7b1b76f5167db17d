"""The Gradio app, served for real on the tiny bundle and driven through gradio_client (as a browser would)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from brainviz.workbench import Workbench  # noqa: E402
from pipelines.data.cifti import hcp_91k_axis, write_dtseries  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workbench(tiny_bundle, tmp_path_factory):
    return Workbench.from_bundle(tiny_bundle, workdir=tmp_path_factory.mktemp("app-work"))


@pytest.fixture(scope="module")
def client(workbench):
    demo = app.build_demo(workbench)
    demo.launch(
        server_name="127.0.0.1",
        server_port=_free_port(),
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        max_file_size=app.MAX_FILE_SIZE,
        allowed_paths=[str(workbench.workdir)],
    )
    yield Client(demo.local_url, verbose=False, download_files=False, analytics_enabled=False)
    demo.close()


def reconstruct(client, index=0, ablate=(), lesion=(), source="test clip", upload=None, tr=2):
    return client.predict(source, index, upload, tr, list(ablate), list(lesion), api_name="/reconstruct")


def show_map(client, label="attribution: Saliency", decoder="semantic", space="fsLR-32k inflated", view="lateral"):
    return client.predict("test clip", 1, None, 2, label, decoder, space, view, api_name="/show_map")


def metrics_table(markdown: str) -> dict[str, tuple[float, float, float]]:
    rows = [line.split("|")[1:-1] for line in markdown.splitlines() if line.startswith("| ") and "metric" not in line]
    return {r[0].strip(): tuple(float(v) for v in r[1:]) for r in rows}


@pytest.fixture(scope="module")
def intact(client):
    return reconstruct(client)


def test_a_reconstruction_shows_truth_video_metrics_flow_and_downloads(intact):
    truth, video, markdown, flow, files = intact
    assert truth["path"].endswith(".mp4") and video["path"].endswith(".mp4")
    table = metrics_table(markdown)
    assert set(table) == {"ssim", "psnr", "flow_epe"}
    assert all(change == 0 for _, _, change in table.values())  # the intact run is its own reference
    assert "test clip 0" in markdown and "a tiny clip number 0" in markdown
    assert flow is not None and flow["type"] == "matplotlib"
    assert [f["path"].rsplit(".", 1)[1] for f in files] == ["mp4", "png"]


def test_the_page_says_the_subject_is_simulated(client, workbench):
    assert "Simulated subject" in workbench.summary()
    config = client.view_api(return_format="dict", print_info=False)
    assert {"/reconstruct", "/show_map"} <= set(config["named_endpoints"])


@pytest.mark.parametrize("ablation", ["semantic", "structure", "motion", "flow", "dependent_noise"])
def test_each_ablation_changes_the_reconstruction(client, intact, ablation):
    _, _, markdown, _, _ = reconstruct(client, ablate=[ablation])
    table = metrics_table(markdown)
    assert f"Ablated: {ablation};" in markdown
    assert table["ssim"][1] == metrics_table(intact[2])["ssim"][0]  # intact column = the intact run
    assert any(abs(change) > 0 for _, _, change in table.values())


def test_a_lesion_sets_its_voxels_to_the_mean_and_changes_the_metrics(client):
    _, _, markdown, _, _ = reconstruct(client, lesion=["early_visual"])
    assert "lesioned ROI groups: early_visual (24 voxels" in markdown
    assert any(abs(change) > 0 for _, _, change in metrics_table(markdown).values())
    _, _, untouched, _, _ = reconstruct(client, lesion=["tpoj"])  # the tiny bundle has no voxel there
    assert "(0 voxels" in untouched and all(c == 0 for _, _, c in metrics_table(untouched).values())


def test_map_switches_change_the_figure_and_the_roi_table(client):
    semantic = show_map(client)
    structure = show_map(client, decoder="structure")
    assert semantic[0]["type"] == "plotly" and semantic[0]["plot"] != structure[0]["plot"]
    assert "semantic: |attribution| (saliency)" in semantic[3] and "simulated subject" in semantic[3]
    table = semantic[1]
    assert table["headers"][0] == "map" and len(table["data"]) == 5  # the chosen map + saliency of the others
    shares = np.array([row[1:] for row in table["data"]], float)
    np.testing.assert_allclose(shares.sum(axis=1), 1, atol=2e-3)
    assert shares[:, 0].min() > 0.99  # every tiny-bundle voxel is in early visual cortex
    ig = show_map(client, label="attribution: IntegratedGradients", decoder="flow")
    assert "convergence delta" in ig[3]
    attention = show_map(client, label="attention: rollout (fMRI encoder)", decoder="fmri-encoder", view="medial")
    assert "not an attribution" in attention[3]
    preview = show_map(client, space="fsaverage5 (resampled preview)")
    assert len(preview[0]["plot"]) < len(semantic[0]["plot"])  # fsaverage5 is the lighter preview
    assert [f["path"].rsplit(".", 1)[1] for f in semantic[4]] == ["html", "csv"]


def test_attention_of_a_decoder_without_attention_is_a_clear_error(client):
    with pytest.raises(Exception, match="only the fmri-encoder has attention"):
        show_map(client, label="attention: rollout (fMRI encoder)", decoder="semantic")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, workbench):
    """Uploaded runs: a valid one, and one of each kind of bad file."""
    folder = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 91282)).astype(np.float32)
    files = {"valid": write_dtseries(folder / "valid.dtseries.nii", data, tr=2.0)}
    nan = data.copy()
    nan[3, 5] = np.nan
    files["nan"] = write_dtseries(folder / "nan.dtseries.nii", nan, tr=2.0)
    files["grayordinates"] = write_dtseries(folder / "small.dtseries.nii", data[:, :1000], 2.0, hcp_91k_axis()[:1000])
    files["not_cifti"] = folder / "notes.nii"
    files["not_cifti"].write_text("this is not a CIFTI file")
    return files


@pytest.mark.parametrize(
    ("kind", "tr", "match"),
    [
        ("not_cifti", 2, "is not a CIFTI-2 file"),
        ("grayordinates", 2, "has 1000 grayordinates; expected 91282"),
        ("nan", 2, "NaN/Inf values"),
        ("valid", 11, r"TR: expected an integer volume in \[2, 9\]"),
        ("valid", 0, r"TR: expected an integer volume in \[2, 9\]"),
    ],
)
def test_a_bad_upload_gives_a_clear_message_and_the_next_request_succeeds(client, runs, kind, tr, match):
    with pytest.raises(Exception, match=match):
        reconstruct(client, source="uploaded run", upload=handle_file(str(runs[kind])), tr=tr)
    _, video, markdown, _, _ = reconstruct(client, index=1)
    assert video["path"].endswith(".mp4") and "test clip 1" in markdown


def test_a_valid_upload_reconstructs_without_ground_truth(client, runs):
    truth, video, markdown, flow, _ = reconstruct(
        client, source="uploaded run", upload=handle_file(str(runs["valid"])), tr=5
    )
    assert truth is None and video["path"].endswith(".mp4")
    assert "valid.dtseries.nii, TR 5" in markdown and "no metrics" in markdown
    assert flow["type"] == "matplotlib"


def test_missing_upload_and_missing_bundle_are_clear(client, tmp_path, capsys):
    with pytest.raises(Exception, match="expected a \\*.dtseries.nii file"):
        reconstruct(client, source="uploaded run", upload=None)
    assert app.main(["--bundle", str(tmp_path / "nowhere")]) == 1
    assert "bundle.json does not exist" in capsys.readouterr().err
