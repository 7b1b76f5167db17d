"""pipelines.data.twin.brain: features on analytic stimuli, tuning in the named areas, HRF, noise model."""

import numpy as np
import pytest
from scipy import stats

from pipelines.data import atlas, cifti
from pipelines.data.twin import brain

CFG = brain.BrainConfig()


@pytest.fixture(scope="module")
def tuning():
    return brain.make_tuning(CFG, n_categories=12, n_backgrounds=5, rng=np.random.default_rng(0))


def test_hrf_matches_the_double_gamma_formula():
    hz = 10.0
    h = brain.canonical_hrf(hz)
    t = np.arange(0, 32, 1 / hz)
    ref = stats.gamma.pdf(t, 6) - stats.gamma.pdf(t, 16) / 6
    np.testing.assert_allclose(h, ref / ref.max(), atol=1e-6)
    assert 4.5 <= t[np.argmax(h)] <= 5.5 and h.min() < -0.05


def test_structure_features_analytic():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    frames[0, :, :, :] = 128  # uniform grey: no contrast, no colour
    frames[1, :4, :2] = 255  # top-left cell (4x4 on a 4-grid) half white: RMS contrast 0.5
    frames[2, ..., 0] = 255  # pure red
    f = brain.structure_features(frames, grid=4)
    assert f.shape == (3, brain.N_CHANNELS, 4, 4)
    assert np.abs(f[0]).max() < 1e-6
    assert f[1, 0, 0, 0] == pytest.approx(0.5) and f[1, 0, 1:, :].max() == 0
    np.testing.assert_allclose(f[2, 1:, 0, 0], [1.0, 0.0, 0.0, 0.5], atol=1e-6)  # red+, green+, blue+, yellow+
    with pytest.raises(ValueError, match=r"expected height and width divisible by grid=5, got 16x16"):
        brain.structure_features(frames, grid=5)


def test_motion_features_analytic():
    flow = np.zeros((2, 8, 8, 2), np.float32)
    flow[0, ..., 0] = 1.0  # rightwards, 1 grid pixel per frame = 16/8 = 2 image widths per second at 16 fps
    flow[1] = np.nan  # scene cut: no motion
    e = brain.motion_features(flow, n_directions=8, fps=16)
    assert e.shape == (2, 8, 8, 8)
    np.testing.assert_allclose(e[0, :, 3, 3], 2 * np.maximum(np.cos(np.deg2rad(np.arange(8) * 45)), 0) ** 2, atol=1e-6)
    assert np.all(e[1] == 0)


def test_roles_live_in_the_named_areas(tuning):
    assert np.all(tuning.role[atlas.area_mask(["V1", "V2", "V3", "V4"])] == 1)
    assert np.all(tuning.role[atlas.area_mask(["MT", "MST", "FST", "V4t"])] == 2)
    assert np.all(tuning.role[atlas.area_mask(["FFC", "VVC", "LO1", "PHA1"])] == 3)
    assert np.all(tuning.role[cifti.N_CORTEX :] == 0)  # subcortex: noise only
    assert np.all(tuning.gain[tuning.role == 0] == 0) and np.all(tuning.gain[tuning.role > 0] > 0)
    assert np.isnan(tuning.preferred_direction[tuning.role != 2]).all()
    scene = atlas.area_mask(["PHA1", "PHA2", "PHA3"])
    assert tuning.scene_tuning[scene].max(1).min() == 1 and tuning.scene_tuning[~scene].max() == 0


def test_receptive_fields_are_contralateral(tuning):
    left = np.asarray(cifti.hcp_91k_axis().name == cifti.CORTEX_LEFT) & (tuning.role == 1)
    right = np.asarray(cifti.hcp_91k_axis().name == cifti.CORTEX_RIGHT) & (tuning.role == 1)
    assert tuning.rf_x[left].min() >= 0.45 and tuning.rf_x[right].max() <= 0.55
    v1, v4 = atlas.area_mask(["V1"]), atlas.area_mask(["V4"])
    assert np.median(tuning.rf_sigma[v1]) < np.median(tuning.rf_sigma[v4])


def test_overlapping_areas_are_rejected():
    cfg = brain.BrainConfig(motion_areas=("MT", "V1"))
    with pytest.raises(ValueError, match=r"areas \('MT', 'V1'\) overlap another role"):
        brain.make_tuning(cfg, 12, 5, np.random.default_rng(0))


def test_neural_response_follows_each_code(tuning):
    n, nc = 4, 12
    structure = np.zeros((n, brain.N_CHANNELS, CFG.grid, CFG.grid), np.float32)
    structure[0, 0, :, : CFG.grid // 2] = 1.0  # contrast in the left visual field only
    motion = np.zeros((n, CFG.n_directions, CFG.motion_grid, CFG.motion_grid), np.float32)
    motion[1, 0] = 1.0  # rightward motion energy everywhere
    category = np.zeros((n, nc), np.float32)
    category[2, 3] = 1.0
    out = brain.neural_response(tuning, CFG, structure, motion, category, np.zeros((n, 5), np.float32))
    index = np.flatnonzero(tuning.role > 0)
    s = tuning.role[index] == 1
    x = tuning.rf_x[index]
    assert out[s & (x < 0.3), 0].mean() > 5 * out[s & (x > 0.7), 0].mean()
    m = tuning.role[index] == 2
    d = tuning.preferred_direction[index]
    near = m & ((d < 30) | (d > 330))
    far = m & (np.abs(d - 180) < 30)
    assert out[near, 1].mean() > 3 * out[far, 1].mean()
    e = tuning.role[index] == 3
    np.testing.assert_allclose(out[e, 2], tuning.category_tuning[index[e], 3], rtol=1e-6)
    assert np.all(out[:, 3] == 0)  # blank: no drive


def test_bold_is_the_hrf_sampled_every_tr():
    neural = np.zeros((1, 200), np.float32)
    neural[0, 0] = 1.0
    bold = brain.bold_signal(neural, CFG, n_volumes=10, tr=2.0)
    hrf = brain.canonical_hrf(CFG.sample_hz)
    np.testing.assert_allclose(bold[0], hrf[np.arange(10) * 8], atol=1e-6)


def test_noisy_run_has_the_configured_snr(tuning):
    rng = np.random.default_rng(1)
    n_volumes = 400
    index = np.flatnonzero(tuning.role > 0)
    bold = rng.standard_normal((index.size, n_volumes)).astype(np.float32)
    cfg = brain.BrainConfig(drift_std=0.0)
    data = brain.noisy_run(tuning, cfg, bold.std(1), bold, 2.0, rng)
    assert data.shape == (n_volumes, cifti.N_GRAYORDINATES)
    pct = (data / tuning.baseline - 1) * 100 / cfg.percent_noise  # signal + noise, in noise units
    noise_only = pct[:, tuning.role == 0]
    assert noise_only.std() == pytest.approx(1.0, rel=0.05)
    lag1 = np.mean([np.corrcoef(noise_only[:-1, j], noise_only[1:, j])[0, 1] for j in range(200)])
    assert lag1 == pytest.approx(cfg.ar1, abs=0.05)
    residual = pct[:, index] - tuning.gain[index] * (bold - bold.mean(1, keepdims=True)).T / bold.std(1)
    assert residual.std() == pytest.approx(1.0, rel=0.05)  # what remains after the signal is the noise
