"""The simulated subject's brain: its own random tuning on the HCP 91k grayordinates, an HRF, and fMRI noise.

Three codes, each in named Glasser areas (both hemispheres), none of them a decoder's feature space:

* structure (V1–V4): population receptive fields (a Gaussian over the visual field, contralateral, size growing
  from V1 to V4) over five local channels — RMS luminance contrast and rectified red–green / blue–yellow
  opponency — with a compressive exponent (CSS model, Kay et al. 2013);
* motion (MT, MST, FST, V4t): large receptive fields over direction-tuned motion energy (von Mises tuning over 8
  directions of the exact optical flow), compressive;
* semantic (FFC, VVC, LO1–3, PHA1–3): sparse random tuning to the object category (scaled by how much of the
  object is in view); parahippocampal areas are also tuned to the scene (background) identity.

Every other grayordinate carries noise only. Neural time courses are computed at ``sample_hz``, convolved with
SPM's canonical double-gamma HRF and sampled every TR. Each voxel's BOLD = baseline x (1 + pct/100 x (gain x
signal + AR(1) noise + slow drift)), with the signal scaled to unit variance over the whole experiment so that
``snr_*`` is the ratio of signal to noise standard deviation of one repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal, special

from pipelines.data import atlas, cifti

ROLES = ("none", "structure", "motion", "semantic")
STRUCTURE_AREAS = ("V1", "V2", "V3", "V4")
MOTION_AREAS = ("MT", "MST", "FST", "V4t")
SEMANTIC_AREAS = ("FFC", "VVC", "LO1", "LO2", "LO3", "PHA1", "PHA2", "PHA3")
SCENE_AREAS = ("PHA1", "PHA2", "PHA3")
N_CHANNELS = 5  # contrast, red+, green+, blue+, yellow+


@dataclass(frozen=True)
class BrainConfig:
    """Parameters of the simulated brain."""

    structure_areas: tuple[str, ...] = STRUCTURE_AREAS  # Glasser areas with pRF responses
    motion_areas: tuple[str, ...] = MOTION_AREAS  # Glasser areas with direction-tuned motion energy
    semantic_areas: tuple[str, ...] = SEMANTIC_AREAS  # Glasser areas with category tuning
    scene_areas: tuple[str, ...] = SCENE_AREAS  # semantic areas that are also tuned to the scene
    snr_structure: float = 0.45  # signal / noise std of a median structure voxel, one repeat
    snr_motion: float = 0.45  # same for motion voxels
    snr_semantic: float = 0.5  # same for semantic voxels
    gain_spread: float = 0.3  # lognormal sigma of the per-voxel gain around the role's snr
    ar1: float = 0.4  # AR(1) coefficient of the noise (per TR)
    drift_std: float = 1.0  # std of the slow drift, relative to the noise std
    percent_noise: float = 1.0  # noise std in percent of the baseline
    baseline: float = 10000.0  # median baseline intensity
    grid: int = 16  # side of the structure feature grid
    motion_grid: int = 8  # side of the motion feature grid
    n_directions: int = 8  # motion directions
    sample_hz: float = 4.0  # neural time resolution (frames are subsampled to this rate)
    exponent: float = 0.5  # compressive exponent of structure and motion responses
    hrf_length: float = 32.0  # seconds of HRF kernel


@dataclass
class BrainTuning:
    """Per-grayordinate ground truth: role and tuning. Arrays over all 91,282 grayordinates unless noted."""

    role: np.ndarray  # (91282,) int8, index into ROLES
    gain: np.ndarray  # (91282,) float32, signal std / noise std (0 for role none)
    baseline: np.ndarray  # (91282,) float32
    rf_x: np.ndarray  # (91282,) float32, receptive-field centre, 0 = left edge, 1 = right edge (NaN if none)
    rf_y: np.ndarray  # (91282,) float32, 0 = top, 1 = bottom (NaN if none)
    rf_sigma: np.ndarray  # (91282,) float32, in image widths (NaN if none)
    channel_weights: np.ndarray  # (91282, N_CHANNELS) float32, structure channel mix (0 elsewhere)
    preferred_direction: np.ndarray  # (91282,) float32, degrees, 0 = rightwards, 90 = downwards (NaN if not motion)
    category_tuning: np.ndarray  # (91282, n_categories) float32 (0 if not semantic)
    scene_tuning: np.ndarray  # (91282, n_backgrounds) float32 (0 outside scene areas)

    def save(self, path) -> None:
        np.savez_compressed(path, roles=np.array(ROLES), **vars(self))

    @classmethod
    def load(cls, path) -> BrainTuning:
        with np.load(path) as f:
            return cls(**{k: f[k] for k in f.files if k != "roles"})


def make_tuning(config: BrainConfig, n_categories: int, n_backgrounds: int, rng: np.random.Generator) -> BrainTuning:
    """Draw the random tuning of every grayordinate."""
    n = cifti.N_GRAYORDINATES
    role = np.zeros(n, np.int8)
    for index, areas in ((1, config.structure_areas), (2, config.motion_areas), (3, config.semantic_areas)):
        mask = atlas.area_mask(list(areas))
        if (role[mask] != 0).any():
            raise ValueError(f"BrainConfig: areas {areas} overlap another role; expected disjoint area lists.")
        role[mask] = index
    right_hemi = _right_hemisphere()
    snr = np.array([0.0, config.snr_structure, config.snr_motion, config.snr_semantic])
    gain = (snr[role] * np.exp(config.gain_spread * rng.standard_normal(n))).astype(np.float32)
    nan = np.full(n, np.nan, np.float32)
    rf_x, rf_y, rf_sigma, direction = nan.copy(), nan.copy(), nan.copy(), nan.copy()

    # Receptive fields: contralateral hemifield (left hemisphere sees the right half), slight overlap.
    has_rf = (role == 1) | (role == 2)
    half = rng.uniform(0.0, 0.55, n)
    rf_x[has_rf] = np.where(right_hemi, 0.55 - half, 0.45 + half)[has_rf]
    rf_y[has_rf] = rng.uniform(0.0, 1.0, n)[has_rf]
    area_sigma = {"V1": (0.04, 0.08), "V2": (0.06, 0.11), "V3": (0.08, 0.15), "V4": (0.12, 0.22)}
    for name, (lo, hi) in area_sigma.items():
        if name in config.structure_areas:
            m = atlas.area_mask([name]) & (role == 1)
            rf_sigma[m] = rng.uniform(lo, hi, m.sum())
    rest = (role == 1) & np.isnan(rf_sigma)
    rf_sigma[rest] = rng.uniform(0.08, 0.2, rest.sum())
    rf_sigma[role == 2] = rng.uniform(0.2, 0.4, (role == 2).sum())

    # Structure channel mix: contrast dominates early, colour grows towards V4.
    channel_weights = np.zeros((n, N_CHANNELS), np.float32)
    s = role == 1
    colour_share = np.where(atlas.area_mask(["V4"])[s], 0.6, 0.25)
    mix = rng.dirichlet(np.ones(N_CHANNELS - 1), s.sum()) * colour_share[:, None]
    channel_weights[s] = np.column_stack([1 - colour_share, mix])

    direction[role == 2] = rng.uniform(0.0, 360.0, (role == 2).sum())

    # Semantic tuning: sparse, each voxel prefers one or two categories.
    category_tuning = np.zeros((n, n_categories), np.float32)
    sem = np.flatnonzero(role == 3)
    raw = rng.gamma(0.3, 1.0, (sem.size, n_categories))
    raw[np.arange(sem.size), rng.integers(0, n_categories, sem.size)] += 1.0
    category_tuning[sem] = raw / raw.max(axis=1, keepdims=True)
    scene_tuning = np.zeros((n, n_backgrounds), np.float32)
    scene = np.flatnonzero(atlas.area_mask(list(config.scene_areas)) & (role == 3))
    raw = rng.gamma(0.3, 1.0, (scene.size, n_backgrounds))
    scene_tuning[scene] = raw / raw.max(axis=1, keepdims=True)

    baseline = (config.baseline * np.exp(0.2 * rng.standard_normal(n))).astype(np.float32)
    return BrainTuning(
        role, gain, baseline, rf_x, rf_y, rf_sigma, channel_weights, direction, category_tuning, scene_tuning
    )


def _right_hemisphere() -> np.ndarray:
    axis = cifti.hcp_91k_axis()
    return np.asarray(axis.name == cifti.CORTEX_RIGHT)


# --- stimulus features -------------------------------------------------------------------------------------------


def structure_features(frames: np.ndarray, grid: int) -> np.ndarray:
    """Local contrast and colour-opponent energy on a grid.

    Parameters
    ----------
    frames : array of shape (n_frames, height, width, 3), uint8
    grid : int
        height and width must be multiples of it.

    Returns
    -------
    array of shape (n_frames, N_CHANNELS, grid, grid), float32
        RMS luminance contrast, then rectified red–green (+/−) and blue–yellow (+/−) opponency, per cell.
    """
    n, h, w, _ = frames.shape
    if h % grid or w % grid:
        raise ValueError(f"frames: expected height and width divisible by grid={grid}, got {h}x{w}.")
    rgb = frames.astype(np.float32) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    cells = lambda x: x.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4))  # noqa: E731
    contrast = np.sqrt(np.maximum(cells(lum**2) - cells(lum) ** 2, 0.0))
    rg = cells(rgb[..., 0] - rgb[..., 1])
    by = cells(rgb[..., 2] - 0.5 * (rgb[..., 0] + rgb[..., 1]))
    out = np.stack([contrast, np.maximum(rg, 0), np.maximum(-rg, 0), np.maximum(by, 0), np.maximum(-by, 0)], axis=1)
    return out.astype(np.float32)


def motion_features(flow: np.ndarray, n_directions: int, fps: float) -> np.ndarray:
    """Direction-tuned motion energy of a flow field on a grid.

    Parameters
    ----------
    flow : array of shape (n_frames, grid, grid, 2)
        Forward flow in grid pixels per frame; NaN (undefined, e.g. at a scene cut) counts as no motion.
    n_directions : int
    fps : float
        Frame rate, to express speed in image widths per second.

    Returns
    -------
    array of shape (n_frames, n_directions, grid, grid), float32
        speed x max(0, cos(angle - direction))^2 for each direction.
    """
    grid = flow.shape[1]
    f = np.nan_to_num(flow, nan=0.0) * (fps / grid)
    speed = np.hypot(f[..., 0], f[..., 1])
    angle = np.arctan2(f[..., 1], f[..., 0])
    dirs = np.deg2rad(np.arange(n_directions) * 360.0 / n_directions)
    tuning = np.maximum(np.cos(angle[:, None] - dirs[None, :, None, None]), 0.0) ** 2
    return (speed[:, None] * tuning).astype(np.float32)


def _gaussian_rf(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, grid: int) -> np.ndarray:
    """Receptive-field weights, array of shape (n_voxels, grid * grid), each row summing to 1."""
    centres = (np.arange(grid) + 0.5) / grid
    gx = np.exp(-0.5 * ((centres[None, :] - x[:, None]) / sigma[:, None]) ** 2)
    gy = np.exp(-0.5 * ((centres[None, :] - y[:, None]) / sigma[:, None]) ** 2)
    weights = (gy[:, :, None] * gx[:, None, :]).reshape(len(x), grid * grid)
    return (weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def neural_response(
    tuning: BrainTuning,
    config: BrainConfig,
    structure: np.ndarray,
    motion: np.ndarray,
    category: np.ndarray,
    background: np.ndarray,
) -> np.ndarray:
    """Neural activity of every encoding voxel over time.

    Parameters
    ----------
    tuning : BrainTuning
    config : BrainConfig
    structure : array of shape (n_samples, N_CHANNELS, grid, grid)
    motion : array of shape (n_samples, n_directions, motion_grid, motion_grid)
    category : array of shape (n_samples, n_categories)
        How much of each category's object is in view (0 when blank).
    background : array of shape (n_samples, n_backgrounds)
        One-hot scene identity (0 when blank).

    Returns
    -------
    array of shape (n_encoding, n_samples), float32
        Rows follow ``np.flatnonzero(tuning.role > 0)``.
    """
    index = np.flatnonzero(tuning.role > 0)
    role = tuning.role[index]
    out = np.zeros((index.size, structure.shape[0]), np.float32)

    s = index[role == 1]
    rf = _gaussian_rf(tuning.rf_x[s], tuning.rf_y[s], tuning.rf_sigma[s], config.grid)
    drive = np.zeros((s.size, structure.shape[0]), np.float32)
    for c in range(N_CHANNELS):
        drive += tuning.channel_weights[s, c : c + 1] * (rf @ structure[:, c].reshape(len(structure), -1).T)
    out[role == 1] = np.maximum(drive, 0) ** config.exponent

    m = index[role == 2]
    rf = _gaussian_rf(tuning.rf_x[m], tuning.rf_y[m], tuning.rf_sigma[m], config.motion_grid)
    dirs = np.arange(config.n_directions) * 360.0 / config.n_directions
    vm = np.exp(2.0 * np.cos(np.deg2rad(dirs[None, :] - tuning.preferred_direction[m, None])))
    vm /= vm.sum(axis=1, keepdims=True)
    pooled = np.einsum("vg,tdg->vdt", rf, motion.reshape(len(motion), config.n_directions, -1))
    out[role == 2] = np.maximum(np.einsum("vd,vdt->vt", vm.astype(np.float32), pooled), 0) ** config.exponent

    e = index[role == 3]
    out[role == 3] = tuning.category_tuning[e] @ category.T + tuning.scene_tuning[e] @ background.T
    return out


def canonical_hrf(hz: float, length: float = 32.0) -> np.ndarray:
    """SPM's canonical double-gamma HRF (peak 6 s, undershoot 16 s, ratio 1/6), sampled at ``hz``, peak 1."""
    t = np.arange(0.0, length, 1.0 / hz)
    peak = t**5 * np.exp(-t) / special.gamma(6)
    under = t**15 * np.exp(-t) / special.gamma(16)
    h = peak - under / 6.0
    return (h / h.max()).astype(np.float32)


def bold_signal(neural: np.ndarray, config: BrainConfig, n_volumes: int, tr: float) -> np.ndarray:
    """Convolve neural activity with the HRF and sample it at every volume.

    Parameters
    ----------
    neural : array of shape (n_voxels, n_samples), sampled at ``config.sample_hz`` from the first volume on
    n_volumes : int
    tr : float

    Returns
    -------
    array of shape (n_voxels, n_volumes), float32
    """
    hrf = canonical_hrf(config.sample_hz, config.hrf_length)
    conv = signal.fftconvolve(neural, hrf[None, :], axes=1)[:, : neural.shape[1]]
    samples = np.round(np.arange(n_volumes) * tr * config.sample_hz).astype(int)
    return conv[:, np.minimum(samples, neural.shape[1] - 1)].astype(np.float32)


def noisy_run(
    tuning: BrainTuning,
    config: BrainConfig,
    signal_std: np.ndarray,
    bold: np.ndarray,
    tr: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One repeat's dense time series on all grayordinates.

    Parameters
    ----------
    signal_std : array of shape (n_encoding,)
        Std of each encoding voxel's BOLD signal over the whole experiment (sets its unit variance).
    bold : array of shape (n_encoding, n_volumes)
        Noise-free signal of the encoding voxels (rows as in :func:`neural_response`).

    Returns
    -------
    array of shape (n_volumes, 91282), float32
    """
    n_volumes, n = bold.shape[1], tuning.role.size
    innovations = rng.standard_normal((n_volumes, n), dtype=np.float32) * np.float32(np.sqrt(1 - config.ar1**2))
    noise = np.empty_like(innovations)
    noise[0] = rng.standard_normal(n, dtype=np.float32)
    for t in range(1, n_volumes):
        noise[t] = config.ar1 * noise[t - 1] + innovations[t]
    # Slow drift: random mix of cosines with periods of 2x, 1x and 2/3x the run length.
    time = np.arange(n_volumes) * tr / (n_volumes * tr)
    basis = np.stack([np.cos(np.pi * k * time) for k in (1, 2, 3)], axis=1).astype(np.float32)
    drift = basis @ (rng.standard_normal((3, n), dtype=np.float32) * np.float32(config.drift_std / np.sqrt(3)))
    total = noise + drift
    index = np.flatnonzero(tuning.role > 0)
    scaled = (bold - bold.mean(axis=1, keepdims=True)) / np.maximum(signal_std[:, None], 1e-12)
    total[:, index] += (tuning.gain[index, None] * scaled).T
    return tuning.baseline * (1.0 + config.percent_noise / 100.0 * total)
