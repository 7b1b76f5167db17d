"""Metrics as pure functions on arrays (reference: ``methods_and_protocols.md`` section A).

Every metric of the published protocols is here, in each variant the papers' code uses, so that one harness can
compute them side by side. Videos are uint8 arrays of shape (n_clips, n_frames, height, width, 3) in RGB order;
per-clip functions return an array of shape (n_clips,) so that the harness can report mean, std and significance.
Embedding-based metrics take the embeddings, not the models: which backbone produced them is the protocol's
business (:mod:`pipelines.evaluation.protocols`).

Where the published code has a quirk (reference A.3, A.5: OpenCV's BGR conversions applied to RGB arrays), the
correct computation is the default and the quirk is an option named after it, so published numbers can be
reproduced and the difference measured.
"""

from __future__ import annotations

from math import comb

import cv2
import numpy as np

SSIM_VARIANTS = ("colour", "gray")
HUE_VARIANTS = ("rgb", "bgr_quirk")
GRAY_VARIANTS = ("rgb", "bgr_quirk")
# OpenCV Farnebäck parameters of Mind-Animator's EPE (reference A.5)
FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}
_SSIM_CHUNK = 4  # frames filtered at once: bounds float64 memory at 512 x 512 x 3 to ~100 MB


def end_point_error(flow: np.ndarray, target: np.ndarray, axis: int = -1) -> float:
    """Mean end-point error: the L2 distance between flow vectors, averaged over every other axis.

    Parameters
    ----------
    flow, target : arrays of one shape whose ``axis`` holds (dx, dy)
        E.g. (n_pairs, height, width, 2) with ``axis=-1``, or (n, n_flows, 2, height, width) with ``axis=-3``.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if flow.shape != target.shape:
        raise ValueError(f"flow: expected the target's shape {target.shape}, got {flow.shape}.")
    return float(np.linalg.norm(np.asarray(flow, np.float64) - target, axis=axis).mean())


def check_videos(predicted: np.ndarray, target: np.ndarray, min_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of video batches: uint8 arrays of one shape (n_clips, n_frames, height, width, 3)."""
    predicted, target = np.asarray(predicted), np.asarray(target)
    for name, videos in (("predicted", predicted), ("target", target)):
        if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
            raise ValueError(
                f"{name}: expected a uint8 array of shape (n_clips, n_frames, height, width, 3) in RGB order, got "
                f"{videos.dtype} array of shape {videos.shape}."
            )
    if predicted.shape != target.shape:
        raise ValueError(f"predicted: expected the target's shape {target.shape}, got {predicted.shape}.")
    if target.shape[1] < min_frames:
        raise ValueError(f"target: this metric needs at least {min_frames} frames per clip, got {target.shape[1]}.")
    return predicted, target


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}.")


# --- pixel metrics -----------------------------------------------------------------------------------------------


def _ssim_map_mean(x: np.ndarray, y: np.ndarray, gaussian: bool, data_range: float) -> np.ndarray:
    """Mean SSIM of each plane of a batch (n, height, width), float64, as scikit-image defines it.

    Statistics are local: a 7 x 7 uniform window with the sample covariance, or Gaussian weights (sigma 1.5,
    truncated at 3.5 sigma: an 11 x 11 window) with the population covariance; borders are reflected
    (``scipy.ndimage`` mode "reflect" = OpenCV ``BORDER_REFLECT``), then a half-window is cropped from each edge
    before averaging (``skimage.metrics.structural_similarity``). OpenCV's separable filters do the smoothing:
    the same sums as scipy's, ten times faster.
    """
    if gaussian:
        sigma = 1.5
        win_size = 2 * int(3.5 * sigma + 0.5) + 1
        cov_norm = 1.0

        def smooth(a: np.ndarray) -> np.ndarray:
            return np.stack(
                [cv2.GaussianBlur(p, (win_size, win_size), sigma, borderType=cv2.BORDER_REFLECT) for p in a]
            )
    else:
        win_size = 7
        cov_norm = win_size**2 / (win_size**2 - 1)

        def smooth(a: np.ndarray) -> np.ndarray:
            return np.stack([cv2.boxFilter(p, -1, (win_size, win_size), borderType=cv2.BORDER_REFLECT) for p in a])

    ux, uy = smooth(x), smooth(y)
    vx = cov_norm * (smooth(x * x) - ux * ux)
    vy = cov_norm * (smooth(y * y) - uy * uy)
    vxy = cov_norm * (smooth(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return s[:, pad:-pad, pad:-pad].reshape(len(s), -1).mean(axis=1)


def _gray_unit(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) → luminance in [0, 1] with ``skimage.color.rgb2gray``'s weights (ITU-R BT.709)."""
    return frames.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721]) / 255.0


def ssim(predicted: np.ndarray, target: np.ndarray, variant: str = "colour") -> np.ndarray:
    """Structural similarity of every frame (reference A.1).

    ``"colour"``: Mind-Animator and MinD-Video: uint8 RGB, a 7 x 7 uniform window, sample covariance,
    data_range 255, averaged over the 3 channels. ``"gray"``: the NeuroClips lineage: ``rgb2gray`` to [0, 1],
    Gaussian weights (sigma 1.5), population covariance, data_range 1.

    Parameters
    ----------
    predicted, target : arrays of shape (n_clips, n_frames, height, width, 3), uint8 RGB
        Frames must be at least 7 x 7 (colour) or 11 x 11 (gray).
    variant : {"colour", "gray"}

    Returns
    -------
    array of shape (n_clips, n_frames)
    """
    _check_choice("variant", variant, SSIM_VARIANTS)
    predicted, target = check_videos(predicted, target)
    n_clips, n_frames, height, width = target.shape[:4]
    minimum = 7 if variant == "colour" else 11
    if min(height, width) < minimum:
        raise ValueError(
            f"target: {variant} SSIM needs frames of at least {minimum} x {minimum}, got {height} x {width}."
        )
    p = predicted.reshape(-1, height, width, 3)
    t = target.reshape(-1, height, width, 3)
    out = np.empty(len(t))
    for i in range(0, len(t), _SSIM_CHUNK):
        if variant == "colour":  # each channel is a plane; the frame's SSIM is the mean over its 3 channels
            x, y = (np.moveaxis(a[i : i + _SSIM_CHUNK], -1, 1).reshape(-1, height, width) for a in (p, t))
            planes = _ssim_map_mean(x.astype(np.float64), y.astype(np.float64), gaussian=False, data_range=255.0)
            out[i : i + _SSIM_CHUNK] = planes.reshape(-1, 3).mean(axis=1)
        else:
            x, y = _gray_unit(p[i : i + _SSIM_CHUNK]), _gray_unit(t[i : i + _SSIM_CHUNK])
            out[i : i + _SSIM_CHUNK] = _ssim_map_mean(x, y, gaussian=True, data_range=1.0)
    return out.reshape(n_clips, n_frames)


def psnr(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio of every frame in dB: 20 log10(255 / sqrt(MSE)) over pixels and channels.

    As Mind-Animator computes it (reference A.2; equal to ``skimage.metrics.peak_signal_noise_ratio`` with
    ``data_range=255``), except that identical frames give 100 dB instead of infinity, as in its code.

    Returns
    -------
    array of shape (n_clips, n_frames)
    """
    predicted, target = check_videos(predicted, target)
    diff = predicted.astype(np.float64) - target
    mse = (diff * diff).mean(axis=(2, 3, 4))
    with np.errstate(divide="ignore"):
        value = 20 * np.log10(255.0 / np.sqrt(mse))
    return np.where(mse < 1e-10, 100.0, value)


def rgb_to_hue(frames: np.ndarray) -> np.ndarray:
    """Hue of uint8 RGB pixels as a fraction of a turn, in [0, 1); 0 where the pixel is gray (max == min).

    The standard hexcone definition (as ``colorsys.rgb_to_hsv`` and ``skimage.color.rgb2hsv``), computed by OpenCV
    in float32 on the frames in their true RGB order.
    """
    frames = np.asarray(frames)
    flat = frames.reshape(-1, frames.shape[-3] * frames.shape[-2], 1, 3).astype(np.float32) / 255.0
    hue = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV)[..., 0] for f in flat])  # degrees in [0, 360)
    return (hue.reshape(frames.shape[:-1]).astype(np.float64) / 360.0) % 1.0


def _opencv_quirk_hue(frames: np.ndarray) -> np.ndarray:
    """Mind-Animator's hue: OpenCV ``COLOR_BGR2HSV`` on RGB arrays (R and B swapped), 8-bit H (0..179) / 360."""
    flat = np.ascontiguousarray(frames.reshape(-1, frames.shape[-3] * frames.shape[-2], 1, 3))
    hue = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2HSV)[..., 0] for f in flat])
    return hue.reshape(frames.shape[:-1]).astype(np.float64) / 360.0


def hue_similarity(predicted: np.ndarray, target: np.ndarray, variant: str = "rgb") -> np.ndarray:
    """Mind-Animator's "Hue-PCC" of every frame: the cosine similarity of the two hue maps (reference A.3).

    Not a Pearson correlation, although the paper names it so: no mean is subtracted, so unrelated frames score
    0.6–0.85. ``"rgb"`` takes the hue of the RGB pixels (in turns, [0, 1)); ``"bgr_quirk"`` reproduces the
    published code, which applies OpenCV's BGR→HSV conversion to RGB arrays and divides the 8-bit hue (0..179)
    by 360. A frame whose hue map is all zero (every pixel gray) has similarity 0.

    Returns
    -------
    array of shape (n_clips, n_frames)
    """
    _check_choice("variant", variant, HUE_VARIANTS)
    predicted, target = check_videos(predicted, target)
    to_hue = rgb_to_hue if variant == "rgb" else _opencv_quirk_hue
    hp = to_hue(predicted).reshape(*target.shape[:2], -1)
    ht = to_hue(target).reshape(*target.shape[:2], -1)
    norms = np.linalg.norm(hp, axis=-1) * np.linalg.norm(ht, axis=-1)
    dot = (hp * ht).sum(axis=-1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)


# --- embedding metrics -------------------------------------------------------------------------------------------


def _check_embeddings(embeddings: np.ndarray, name: str, min_frames: int) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 3 or embeddings.shape[1] < min_frames:
        raise ValueError(
            f"{name}: expected an array of shape (n_clips, n_frames, dim) with n_frames >= {min_frames}, got "
            f"shape {embeddings.shape}."
        )
    return embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def clip_pcc_adjacent(embeddings: np.ndarray, vifi: np.ndarray | None = None, gate: float | None = 0.6) -> np.ndarray:
    """Mind-Animator's CLIP-PCC: mean cosine between consecutive predicted frames, gated by VIFI (reference A.4).

    Parameters
    ----------
    embeddings : array of shape (n_clips, n_frames, dim)
        Image embeddings of the *predicted* frames only (the ground truth plays no part).
    vifi : array of shape (n_clips,), optional
        Each clip's VIFI score; where it is ``<= gate`` the clip's CLIP-PCC is set to 0, as published.
    gate : float or None
        The VIFI threshold (0.6 in the paper); None turns gating off.

    Returns
    -------
    array of shape (n_clips,)
    """
    e = _unit(_check_embeddings(embeddings, "embeddings", 2))
    value = (e[:, :-1] * e[:, 1:]).sum(axis=-1).mean(axis=1)
    if gate is None:
        return value
    if vifi is None:
        raise ValueError(
            "vifi: gating (gate is not None) needs each clip's VIFI score; got None. Pass gate=None to skip."
        )
    vifi = np.asarray(vifi, np.float64)
    if vifi.shape != value.shape:
        raise ValueError(f"vifi: expected shape {value.shape} (one score per clip), got {vifi.shape}.")
    return np.where(vifi <= gate, 0.0, value)


def clip_pcc_all_pairs(embeddings: np.ndarray) -> np.ndarray:
    """The NeuroClips lineage's CLIP-PCC: mean cosine over all ordered pairs of distinct predicted frames (A.4).

    Parameters
    ----------
    embeddings : array of shape (n_clips, n_frames, dim)

    Returns
    -------
    array of shape (n_clips,)
    """
    e = _unit(_check_embeddings(embeddings, "embeddings", 2))
    n_frames = e.shape[1]
    gram = e @ e.transpose(0, 2, 1)
    return (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (n_frames * (n_frames - 1))


def video_cosine(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Cosine between video features: the mean of each clip's frame features, L2-normalised (VIFI, reference A.6).

    With ViFi-CLIP frame features this is Mind-Animator's VIFI score; with another backbone's frame features it is
    the frame-averaged approximation the reference describes (the demo tier's VIFI).

    Parameters
    ----------
    predicted, target : arrays of shape (n_clips, n_frames, dim)
        Per-frame image features.

    Returns
    -------
    array of shape (n_clips,)
    """
    p = _check_embeddings(predicted, "predicted", 1)
    t = _check_embeddings(target, "target", 1)
    if p.shape[0] != t.shape[0] or p.shape[2] != t.shape[2]:
        raise ValueError(f"predicted: expected {t.shape[0]} clips of dim {t.shape[2]}, got shape {p.shape}.")
    return (_unit(p.mean(axis=1)) * _unit(t.mean(axis=1))).sum(axis=-1)


def frame_cosine(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean over frames of the cosine between predicted and ground-truth frame features (BrainNRDS's CLIP-cos).

    Returns
    -------
    array of shape (n_clips,)
    """
    p = _check_embeddings(predicted, "predicted", 1)
    t = _check_embeddings(target, "target", 1)
    if p.shape != t.shape:
        raise ValueError(f"predicted: expected the target's shape {t.shape}, got {p.shape}.")
    return (_unit(p) * _unit(t)).sum(axis=-1).mean(axis=1)


# --- optical flow ------------------------------------------------------------------------------------------------


def to_gray(frames: np.ndarray, variant: str = "rgb") -> np.ndarray:
    """uint8 RGB frames (..., height, width, 3) → uint8 gray (..., height, width) with OpenCV's weights.

    ``"bgr_quirk"`` applies ``COLOR_BGR2GRAY`` to the RGB array, as Mind-Animator's EPE code does (reference A.5).
    """
    _check_choice("variant", variant, GRAY_VARIANTS)
    code = cv2.COLOR_RGB2GRAY if variant == "rgb" else cv2.COLOR_BGR2GRAY
    frames = np.asarray(frames)
    flat = np.ascontiguousarray(frames.reshape(-1, *frames.shape[-3:]))
    return np.stack([cv2.cvtColor(f, code) for f in flat]).reshape(frames.shape[:-1])


def farneback_flow(video: np.ndarray, gray: str = "rgb") -> np.ndarray:
    """OpenCV Farnebäck flow between consecutive frames with Mind-Animator's parameters (reference A.5).

    Parameters
    ----------
    video : array of shape (n_frames, height, width, 3), uint8 RGB
    gray : {"rgb", "bgr_quirk"}
        How frames become gray (see :func:`to_gray`).

    Returns
    -------
    array of shape (n_frames - 1, height, width, 2), float32
        dx (rightwards), dy (downwards) in pixels, from frame j to frame j + 1.
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) < 2:
        raise ValueError(
            f"video: expected a uint8 array of shape (n_frames >= 2, height, width, 3), got {video.dtype} array of "
            f"shape {video.shape}."
        )
    g = to_gray(video, gray)
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK) for a, b in zip(g[:-1], g[1:], strict=True)])


def flow_epe(predicted_flow: np.ndarray, target_flow: np.ndarray) -> np.ndarray:
    """EPE of every clip: the mean over flows and pixels of ||target − predicted||₂ (reference A.5).

    Parameters
    ----------
    predicted_flow, target_flow : arrays of shape (n_clips, n_flows, height, width, 2)
        E.g. Farnebäck or RAFT flow of the reconstruction and of the ground truth, or the simulator's exact flow.

    Returns
    -------
    array of shape (n_clips,)
    """
    predicted_flow, target_flow = np.asarray(predicted_flow), np.asarray(target_flow)
    if target_flow.ndim != 5 or target_flow.shape[-1] != 2:
        raise ValueError(
            f"target_flow: expected an array of shape (n_clips, n_flows, height, width, 2), got shape "
            f"{target_flow.shape}."
        )
    if predicted_flow.shape != target_flow.shape:
        raise ValueError(
            f"predicted_flow: expected the target's shape {target_flow.shape}, got {predicted_flow.shape}."
        )
    return np.linalg.norm(predicted_flow.astype(np.float64) - target_flow, axis=-1).mean(axis=(1, 2, 3))


def flow_direction(flows: np.ndarray, n_bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Net motion direction of every clip from its flows: the angle of the flow summed over pairs, averaged over pixels.

    Static pixels add nothing to the sum, so the direction is the moving content's; image degrees follow the
    simulator's labels (0 = rightwards, 90 = downwards) and the bins are centred on 0, 360 / n_bins, ...

    Parameters
    ----------
    flows : array of shape (n_clips, n_flows, height, width, 2)
        (dx, dy) in pixels, e.g. RAFT between consecutive frames.

    Returns
    -------
    degrees : array of shape (n_clips,), in [0, 360)
    bins : int array of shape (n_clips,), in [0, n_bins)
    """
    flows = np.asarray(flows, np.float64)
    if flows.ndim != 5 or flows.shape[-1] != 2:
        raise ValueError(
            f"flows: expected an array of shape (n_clips, n_flows, height, width, 2), got shape {flows.shape}."
        )
    if n_bins < 1:
        raise ValueError(f"n_bins: expected a positive count, got {n_bins}.")
    net = flows.sum(axis=1).mean(axis=(1, 2))  # (n_clips, 2)
    degrees = np.degrees(np.arctan2(net[:, 1], net[:, 0])) % 360.0
    width = 360.0 / n_bins
    return degrees, (np.floor((degrees + width / 2) / width).astype(np.int64) % n_bins)


# --- classification and retrieval --------------------------------------------------------------------------------


def n_way_chance(n_way: int, top_k: int = 1, n_true: int = 3) -> float:
    """Chance level of :func:`n_way_top_k`: 3 / (n + 2) for top-1 with the 3 ground-truth classes rule (A.7).

    With scores that carry no information, the ``n_true`` ground-truth classes and the ``n_way - 1`` distractors
    are in random order; a trial succeeds when the best-ranked true class has fewer than ``top_k`` distractors
    above it. The probability that the first true class sits at position j + 1 is C(n + 1 − j, 2) / C(n + 2, 3)
    for 3 true classes, in general C(n_way − 1 + n_true − j − 1, n_true − 1) / C(n_way − 1 + n_true, n_true).
    """
    if n_way < 2 or top_k < 1 or n_true < 1:
        raise ValueError(f"n_way, top_k, n_true: expected >= 2, >= 1, >= 1, got {n_way}, {top_k}, {n_true}.")
    n_items = n_way - 1 + n_true
    total = comb(n_items, n_true)
    return sum(comb(n_items - j - 1, n_true - 1) for j in range(min(top_k, n_way))) / total


def n_way_top_k(
    target_scores: np.ndarray,
    predicted_scores: np.ndarray,
    n_way: int,
    top_k: int = 1,
    n_trials: int = 100,
    seed: int = 0,
    n_true: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """N-way top-K classification accuracy of every sample, as MinD-Video, Mind-Animator and NeuroClips compute it.

    For each sample the ground truth's ``n_true`` (3) highest-scoring classes are the true classes. In each of
    ``n_trials`` trials, ``n_way - 1`` distractors are drawn without replacement from the other classes; the
    trial succeeds if any true class ranks in the top ``top_k`` of itself and the distractors under the
    prediction's scores (a distractor tied with it counts against it). Chance is :func:`n_way_chance`
    (0.75 for 2-way top-1, not 0.5). Draws come from ``numpy.random.default_rng(seed)``, so results repeat.

    Parameters
    ----------
    target_scores, predicted_scores : arrays of shape (n_samples, n_classes)
        Classifier logits or probabilities of the ground truth and of the reconstruction (only their order
        matters).

    Returns
    -------
    accuracy : array of shape (n_samples,)
        Fraction of successful trials per sample.
    binomial_std : array of shape (n_samples,)
        sqrt(acc (1 − acc) / n_trials): the papers report the mean of this as the "±".

    Raises
    ------
    ValueError
        If shapes differ or there are too few classes for ``n_way`` (need n_classes >= n_way − 1 + n_true).
    """
    target_scores, predicted_scores = np.asarray(target_scores), np.asarray(predicted_scores, np.float64)
    if target_scores.ndim != 2 or predicted_scores.shape != target_scores.shape:
        raise ValueError(
            f"predicted_scores: expected two arrays of one shape (n_samples, n_classes), got {predicted_scores.shape} "
            f"and {target_scores.shape}."
        )
    n_classes = target_scores.shape[1]
    if n_way < 2 or top_k < 1 or n_trials < 1:
        raise ValueError(f"n_way, top_k, n_trials: expected >= 2, >= 1, >= 1, got {n_way}, {top_k}, {n_trials}.")
    if n_classes < n_way - 1 + n_true:
        raise ValueError(
            f"n_way: {n_way}-way needs at least {n_way - 1 + n_true} classes ({n_true} true + {n_way - 1} "
            f"distractors), but the classifier has {n_classes}. Use a smaller n_way or a classifier with more classes."
        )
    rng = np.random.default_rng(seed)
    true = np.argsort(target_scores, axis=1, kind="stable")[:, -n_true:]
    accuracy = np.empty(len(target_scores))
    for i, (scores, classes) in enumerate(zip(predicted_scores, true, strict=True)):
        others = np.setdiff1d(np.arange(n_classes), classes)
        # n_way - 1 distinct distractors per trial: the first columns of a random permutation of the others
        picked = others[rng.random((n_trials, len(others))).argsort(axis=1)[:, : n_way - 1]]
        above = (scores[picked][:, :, None] >= scores[classes][None, None, :]).sum(axis=1)  # (n_trials, n_true)
        accuracy[i] = (above < top_k).any(axis=1).mean()
    return accuracy, np.sqrt(accuracy * (1 - accuracy) / n_trials)


def retrieval_top_k(
    queries: np.ndarray, gallery: np.ndarray, top_k: int = 10, distractors: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Whether each query's own gallery item ranks in the top ``top_k`` by cosine similarity (reference A.8).

    Query i matches gallery item i (Mind-Animator's small set); ``distractors`` are appended to the gallery
    (its large set: test clips + other clips). A candidate tied with the correct one counts against it.

    Parameters
    ----------
    queries : array of shape (n, dim)
        E.g. fMRI embeddings.
    gallery : array of shape (n, dim)
        E.g. CLIP text embeddings of the test captions.
    distractors : array of shape (m, dim), optional

    Returns
    -------
    hits : array of shape (n,), bool
    chance : float
        top_k / (n + m).
    """
    queries, gallery = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if queries.ndim != 2 or gallery.shape != queries.shape:
        raise ValueError(
            f"gallery: expected the queries' shape (n, dim) = {queries.shape} (item i matches query i), got "
            f"{gallery.shape}."
        )
    if distractors is not None:
        distractors = np.asarray(distractors, np.float64)
        if distractors.ndim != 2 or distractors.shape[1] != gallery.shape[1]:
            raise ValueError(f"distractors: expected shape (m, {gallery.shape[1]}), got {distractors.shape}.")
        gallery = np.concatenate([gallery, distractors])
    if top_k < 1:
        raise ValueError(f"top_k: expected >= 1, got {top_k}.")
    similarity = _unit(queries) @ _unit(gallery).T
    own = similarity[np.arange(len(queries)), np.arange(len(queries))]
    rank = (similarity >= own[:, None]).sum(axis=1) - 1  # candidates at least as similar, other than itself
    return rank < top_k, min(top_k, len(gallery)) / len(gallery)
