"""The simulated subject on disk: CC2017 layout, CIFTI format, sidecar, determinism, exact flow."""

import json

import nibabel as nib
import numpy as np
import pytest

from pipelines.config import load_config, preset_path
from pipelines.data import cifti, video
from pipelines.data.twin import groundtruth
from pipelines.data.twin.simulate import TwinConfig, main, simulate
from pipelines.data.twin.stimuli import CATEGORIES

MICRO = ["n_train_segments=1", "n_test_runs=1", "n_movie_trs=3", "test_repeats=1", "train_repeats=1"]


def micro_config() -> TwinConfig:
    return load_config(TwinConfig, preset_path("twin", "tiny"), MICRO)


def test_layout_uses_the_cc2017_names_and_volume_counts(tiny_twin):
    names = sorted(p.name for p in (tiny_twin / "stimuli").iterdir())
    assert names == ["seg1.mp4", "seg2.mp4", "seg3.mp4", "seg4.mp4", "test1.mp4", "test2.mp4"]
    fmri = tiny_twin / "subject1" / "fmri"
    for run, n_repeats, n_volumes in (("seg1", 2, 21), ("seg4", 2, 21), ("test1", 3, 21), ("test2", 3, 22)):
        files = sorted((fmri / run / "cifti").iterdir())
        assert [f.name for f in files] == [f"{run}_{r}_Atlas.dtseries.nii" for r in range(1, n_repeats + 1)]
        img = nib.load(files[0])
        assert img.shape == (n_volumes, cifti.N_GRAYORDINATES)  # 1 (or 2) leading + 16 movie + 4 trailing
        assert img.nifti_header.get_intent()[0] == "ConnDenseSeries"
        assert img.header.get_axis(1) == cifti.hcp_91k_axis()
        assert img.header.get_axis(0).step == 2.0
    info = video.probe_video(tiny_twin / "stimuli" / "seg1.mp4")
    assert (info.codec, info.fps, info.n_frames, info.height) == ("h264", 8.0, 16 * 2 * 8, 64)


def test_sidecar(tiny_twin):
    meta = groundtruth.load_meta(tiny_twin)
    assert meta["simulated"] is True and meta["preset"] == "tiny" and meta["seed"] == 0
    assert meta["roles"] == ["none", "structure", "motion", "semantic"] and len(meta["categories"]) >= 10
    assert [r["leading_volumes"] for r in meta["runs"]] == [1, 1, 1, 1, 1, 2]
    tuning = groundtruth.load_tuning(tiny_twin)
    assert tuning.role.shape == (cifti.N_GRAYORDINATES,) and set(np.unique(tuning.role)) == {0, 1, 2, 3}
    plan = groundtruth.load_plan(tiny_twin, "test2")
    assert len(plan) == 16 and all(c["category"] in CATEGORIES and c["caption"] for c in plan)
    json.dumps(plan)
    feats = groundtruth.load_features(tiny_twin, "seg1")
    assert {k: v.shape for k, v in feats.items()} == {
        "structure": (16, 5 * 64),
        "motion": (16, 8 * 16),
        "category": (16, len(CATEGORIES)),
        "background": (16, len(meta["backgrounds"])),
    }
    # the category feature marks the planned category of each clip
    np.testing.assert_array_equal(
        feats["category"].argmax(1), [c["category_id"] for c in groundtruth.load_plan(tiny_twin, "seg1")]
    )
    with pytest.raises(FileNotFoundError, match=r"clips/seg9.json does not exist; expected the plan of run 'seg9'"):
        groundtruth.load_plan(tiny_twin, "seg9")


def test_movie_frames_and_exact_flow(tiny_twin):
    frames = video.read_video(tiny_twin / "stimuli" / "seg2.mp4")
    renderer = groundtruth._renderer(str(tiny_twin.resolve()), "seg2")
    ref = renderer.frames(0, frames.shape[0])
    psnr = 10 * np.log10(255**2 / np.mean((frames.astype(float) - ref) ** 2))
    assert psnr > 30
    flow = groundtruth.exact_flow(tiny_twin, "seg2", 3)
    np.testing.assert_array_equal(flow, renderer.flow(3))
    assert flow.shape == (64, 64, 2) and np.isfinite(flow).all()
    assert groundtruth.exact_flow(tiny_twin, "seg2", 3, 16, 16).shape == (16, 16, 2)


def test_same_seed_same_subject_other_seed_other_subject(tmp_path):
    a = simulate(micro_config(), tmp_path / "a", seed=7)
    b = simulate(micro_config(), tmp_path / "b", seed=7)
    c = simulate(micro_config(), tmp_path / "c", seed=8)
    rel = "subject1/fmri/test1/cifti/test1_1_Atlas.dtseries.nii"
    load = lambda root: np.asarray(nib.load(root / rel).dataobj)  # noqa: E731
    np.testing.assert_array_equal(load(a), load(b))
    assert not np.array_equal(load(a), load(c))
    np.testing.assert_array_equal(video.read_video(a / "stimuli/seg1.mp4"), video.read_video(b / "stimuli/seg1.mp4"))
    assert groundtruth.load_plan(a, "seg1") == groundtruth.load_plan(b, "seg1") != groundtruth.load_plan(c, "seg1")


def test_refuses_to_overwrite_and_cli(tmp_path, capsys):
    out = tmp_path / "sub"
    assert main(["--preset", "tiny", "--out", str(out), "--seed", "3", *MICRO]) == 0
    assert "Simulated subject written to" in capsys.readouterr().out
    assert groundtruth.load_meta(out)["seed"] == 3
    with pytest.raises(FileExistsError, match="already holds a simulated subject"):
        simulate(micro_config(), out)
    with pytest.raises(ValueError, match=r"Unknown twin preset 'huge'"):
        main(["--preset", "huge", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_runs'\] for TwinConfig"):
        main(["--preset", "tiny", "--out", str(tmp_path / "y"), "n_runs=3"])


def test_not_simulated(tmp_path):
    assert not groundtruth.is_simulated(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a simulated subject"):
        groundtruth.load_meta(tmp_path)
