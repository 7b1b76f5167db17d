"""pipelines.evaluation.metrics against scikit-image, colorsys, analytic cases and simulation."""

import colorsys

import numpy as np
import pytest
from skimage.color import rgb2gray, rgb2hsv
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipelines.evaluation import metrics as m


def pair(shape=(2, 3, 24, 30, 3), seed=0, noise=60):
    """Smooth-ish frames and a noisy copy: uint8 videos of ``shape``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape).astype(np.float64)
    base = (base + np.roll(base, 1, axis=2) + np.roll(base, 1, axis=3)) / 3
    target = base.astype(np.uint8)
    predicted = np.clip(base + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return predicted, target


def test_end_point_error_is_the_mean_vector_distance():
    flow = np.zeros((1, 1, 2, 1, 2))  # (n, n_flows, 2, height, width)
    flow[0, 0, :, 0, 0] = [3.0, 4.0]  # a 3-4-5 triangle at one pixel, exact at the other
    assert m.end_point_error(flow, np.zeros_like(flow), axis=-3) == pytest.approx(2.5)
    target = np.ones_like(flow)
    flow = target.copy()
    flow[0, 0, :, 0, 1] = [1.0 - 6.0, 1.0 + 8.0]  # 6-8-10
    assert m.end_point_error(flow, target, axis=-3) == pytest.approx(5.0)


def test_end_point_error_shape_error():
    with pytest.raises(ValueError, match=r"flow: expected the target's shape \(2, 2, 4, 5\), got \(2, 2, 4, 4\)"):
        m.end_point_error(np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 5)), axis=-3)


# --- SSIM and PSNR against scikit-image --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 24, 30, 3), (1, 2, 11, 13, 3)])
def test_colour_ssim_is_skimage_default_on_uint8_rgb(shape):
    predicted, target = pair(shape)
    expected = [
        [structural_similarity(p, t, data_range=255, channel_axis=-1) for p, t in zip(pc, tc, strict=True)]
        for pc, tc in zip(predicted, target, strict=True)
    ]
    np.testing.assert_allclose(m.ssim(predicted, target, "colour"), expected, rtol=0, atol=1e-12)


def test_gray_ssim_is_the_neuroclips_lineage_call():
    predicted, target = pair()
    expected = [
        [
            structural_similarity(
                rgb2gray(p), rgb2gray(t), data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for p, t in zip(pc, tc, strict=True)
        ]
        for pc, tc in zip(predicted, target, strict=True)
    ]
    np.testing.assert_allclose(m.ssim(predicted, target, "gray"), expected, rtol=0, atol=1e-12)


def test_ssim_of_identical_frames_is_one_and_the_variants_differ():
    predicted, target = pair()
    np.testing.assert_allclose(m.ssim(target, target), 1.0)
    np.testing.assert_allclose(m.ssim(target, target, "gray"), 1.0)
    assert np.abs(m.ssim(predicted, target) - m.ssim(predicted, target, "gray")).max() > 0.05


def test_psnr_is_skimage_and_identical_frames_give_100():
    predicted, target = pair()
    expected = [
        [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pc, tc, strict=True)]
        for pc, tc in zip(predicted, target, strict=True)
    ]
    np.testing.assert_allclose(m.psnr(predicted, target), expected, rtol=1e-12)
    assert m.psnr(target, target).tolist() == [[100.0] * 3] * 2


def test_psnr_analytic_value():
    target = np.zeros((1, 1, 4, 4, 3), np.uint8)
    predicted = np.full_like(target, 255)
    assert m.psnr(predicted, target)[0, 0] == pytest.approx(0.0)  # MSE = 255²
    predicted = np.full_like(target, 1)
    assert m.psnr(predicted, target)[0, 0] == pytest.approx(20 * np.log10(255.0))  # MSE = 1


def test_video_checks_name_the_argument():
    target = np.zeros((1, 2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"predicted: expected a uint8 array .* got float64 array of shape"):
        m.ssim(target.astype(np.float64), target)
    with pytest.raises(
        ValueError, match=r"target: expected a uint8 array .* got uint8 array of shape \(2, 16, 16, 3\)"
    ):
        m.psnr(target, target[0])
    with pytest.raises(ValueError, match=r"predicted: expected the target's shape \(1, 2, 16, 16, 3\), got \(1, 1, 16"):
        m.hue_similarity(target[:, :1], target)
    with pytest.raises(ValueError, match=r"gray SSIM needs frames of at least 11 x 11, got 8 x 16"):
        m.ssim(target[:, :, :8], target[:, :, :8], "gray")
    with pytest.raises(ValueError, match=r"variant: expected one of \['colour', 'gray'\], got 'grey'"):
        m.ssim(target, target, "grey")


# --- hue ---------------------------------------------------------------------------------------------------------


def every_kind_of_pixel():
    """Gray, primaries, secondaries, hues on each sextant boundary and random colours: (1, 1, 1, n, 3) uint8."""
    fixed = [[0, 0, 0], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]]
    fixed += [[255, 0, 255], [255, 0, 1], [200, 100, 50], [50, 100, 200], [10, 200, 10]]
    random = np.random.default_rng(1).integers(0, 256, (200, 3))
    return np.concatenate([np.array(fixed), random]).astype(np.uint8)[None, None, None]


def test_hue_is_colorsys_and_skimage():
    pixels = every_kind_of_pixel()
    expected = [colorsys.rgb_to_hsv(*(p / 255.0))[0] for p in pixels.reshape(-1, 3)]
    hue = m.rgb_to_hue(pixels).ravel()
    np.testing.assert_allclose(hue, expected, atol=1e-5)
    np.testing.assert_allclose(hue, rgb2hsv(pixels[0, 0])[..., 0].ravel(), atol=1e-5)
    assert hue.min() >= 0 and hue.max() < 1


def test_hue_similarity_is_the_cosine_of_hue_maps():
    red, green, blue = [255, 0, 0], [0, 255, 0], [0, 0, 255]  # hues 0, 1/3, 2/3
    target = np.array([[[[green, blue]]]], np.uint8)
    predicted = np.array([[[[blue, green]]]], np.uint8)
    expected = (1 / 3 * 2 / 3 * 2) / (1 / 9 + 4 / 9)  # (h1·h2) / (|h1| |h2|) with equal norms
    assert m.hue_similarity(predicted, target)[0, 0] == pytest.approx(expected)
    assert m.hue_similarity(target, target)[0, 0] == pytest.approx(1.0)
    gray = np.full_like(target, 90)
    assert m.hue_similarity(gray, target)[0, 0] == 0.0  # an all-zero hue map has similarity 0, not NaN
    reds = np.array([[[[red, red]]]], np.uint8)
    assert m.hue_similarity(reds, target)[0, 0] == 0.0  # red's hue is 0


def test_bgr_quirk_is_opencv_8bit_hue_of_the_swapped_pixels():
    pixels = every_kind_of_pixel()
    seen = pixels[..., ::-1].reshape(-1, 3)  # OpenCV reads the RGB array as BGR: it sees (B, G, R) as the colour
    degrees = np.array([colorsys.rgb_to_hsv(*(p / 255.0))[0] * 360 for p in seen])
    expected = np.round(degrees / 2) % 180 / 360  # 8-bit OpenCV hue is degrees / 2, then divided by 360
    quirk = m._opencv_quirk_hue(pixels).ravel()
    assert np.abs(quirk - expected).max() <= 1 / 360 + 1e-12  # OpenCV's fixed-point rounding: at most 1 step
    assert quirk.max() < 0.5  # 0..179 / 360: half the correct range
    target, predicted = pixels, pixels[..., [1, 2, 0]].copy()
    assert m.hue_similarity(predicted, target, "bgr_quirk")[0, 0] != pytest.approx(
        m.hue_similarity(predicted, target)[0, 0]
    )


# --- embedding metrics -------------------------------------------------------------------------------------------


def test_clip_pcc_adjacent_hand_computed_and_gated():
    e = np.array([[[1.0, 0], [1, 0], [0, 1]], [[1, 0], [1, 1], [0, 1]]])  # cos pairs: (1, 0) and (√½, √½)
    np.testing.assert_allclose(m.clip_pcc_adjacent(e, gate=None), [0.5, np.sqrt(0.5)])
    np.testing.assert_allclose(m.clip_pcc_adjacent(e, vifi=np.array([0.6, 0.61]), gate=0.6), [0.0, np.sqrt(0.5)])


def test_clip_pcc_all_pairs_hand_computed():
    e = np.array([[[1.0, 0], [1, 0], [0, 1]]])  # pairs (0,1): 1, (0,2): 0, (1,2): 0 → 2 / 6 over ordered pairs
    np.testing.assert_allclose(m.clip_pcc_all_pairs(e), [1 / 3])
    np.testing.assert_allclose(m.clip_pcc_all_pairs(np.ones((2, 4, 3))), [1.0, 1.0])


def test_video_and_frame_cosine():
    target = np.array([[[1.0, 0], [0, 1]]])
    predicted = np.array([[[0.0, 1], [1, 0]]])  # same frames, reversed: same mean, orthogonal frame by frame
    np.testing.assert_allclose(m.video_cosine(predicted, target), [1.0])
    np.testing.assert_allclose(m.frame_cosine(predicted, target), [0.0])
    np.testing.assert_allclose(m.video_cosine(-target, target), [-1.0])


def test_embedding_errors():
    e = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"vifi: gating .* needs each clip's VIFI score; got None"):
        m.clip_pcc_adjacent(e)
    with pytest.raises(ValueError, match=r"vifi: expected shape \(2,\) \(one score per clip\), got \(3,\)"):
        m.clip_pcc_adjacent(e, vifi=np.zeros(3))
    with pytest.raises(
        ValueError, match=r"embeddings: expected an array of shape \(n_clips, n_frames, dim\) with n_frames >= 2"
    ):
        m.clip_pcc_all_pairs(e[:, :1])
    with pytest.raises(ValueError, match=r"predicted: expected 2 clips of dim 4, got shape \(2, 3, 5\)"):
        m.video_cosine(np.zeros((2, 3, 5)), e)
    with pytest.raises(ValueError, match=r"predicted: expected the target's shape \(2, 3, 4\), got \(2, 2, 4\)"):
        m.frame_cosine(e[:, :2], e)


# --- optical flow ------------------------------------------------------------------------------------------------


def translating_video(dx: int, dy: int, n_frames: int = 3, size: int = 64) -> np.ndarray:
    """A smooth random texture moving by (dx, dy) pixels per frame: (n_frames, size, size, 3) uint8."""
    from scipy.ndimage import gaussian_filter

    texture = gaussian_filter(np.random.default_rng(0).random((size * 2, size * 2)), 2.0)
    texture = (texture - texture.min()) / np.ptp(texture) * 255
    frames = [
        np.roll(texture, (k * dy, k * dx), axis=(0, 1))[size // 2 : size // 2 + size, size // 2 : size // 2 + size]
        for k in range(n_frames)
    ]
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1).astype(np.uint8)


def test_farneback_recovers_a_known_translation():
    flow = m.farneback_flow(translating_video(2, -1))
    assert flow.shape == (2, 64, 64, 2) and flow.dtype == np.float32
    interior = flow[:, 16:-16, 16:-16].reshape(-1, 2)
    np.testing.assert_allclose(np.median(interior, axis=0), [2.0, -1.0], atol=0.1)
    exact = np.broadcast_to(np.array([2.0, -1.0], np.float32), flow.shape)
    assert m.flow_epe(flow[None, :, 16:-16, 16:-16], exact[None, :, 16:-16, 16:-16])[0] < 0.2


def test_flow_epe_analytic():
    target = np.zeros((2, 3, 4, 4, 2))
    predicted = target.copy()
    predicted[0, ..., 0], predicted[0, ..., 1] = 3.0, 4.0  # clip 0: 5 px everywhere; clip 1: exact
    np.testing.assert_allclose(m.flow_epe(predicted, target), [5.0, 0.0])
    with pytest.raises(
        ValueError, match=r"predicted_flow: expected the target's shape \(2, 3, 4, 4, 2\), got \(2, 3, 4, 2\)"
    ):
        m.flow_epe(predicted[:, :, 0], target)
    with pytest.raises(
        ValueError, match=r"target_flow: expected an array of shape \(n_clips, n_flows, height, width, 2\)"
    ):
        m.flow_epe(target[0], target[0])


def test_gray_quirk_swaps_red_and_blue_weights():
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    assert m.to_gray(red).ravel().tolist() == [76] * 4  # 0.299 x 255
    assert m.to_gray(red, "bgr_quirk").ravel().tolist() == [29] * 4  # 0.114 x 255
    with pytest.raises(ValueError, match=r"video: expected a uint8 array of shape \(n_frames >= 2, height, width, 3\)"):
        m.farneback_flow(red)


# --- n-way classification ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_way", "expected"), [(2, 0.75), (50, 3 / 52), (5, 3 / 7)])
def test_n_way_chance_is_three_over_n_plus_two(n_way, expected):
    assert m.n_way_chance(n_way) == pytest.approx(expected)


@pytest.mark.parametrize(("n_way", "top_k"), [(2, 1), (5, 1), (5, 2), (9, 3)])
def test_n_way_accuracy_of_uninformative_scores_is_chance_by_simulation(n_way, top_k):
    rng = np.random.default_rng(n_way * 10 + top_k)
    target, predicted = rng.normal(size=(3000, 12)), rng.normal(size=(3000, 12))
    accuracy, binomial = m.n_way_top_k(target, predicted, n_way, top_k, n_trials=50, seed=1)
    # independent reference: a direct simulation of the definition with random ranks
    ranks = rng.random((200_000, n_way + 2)).argsort(axis=1)  # 3 true classes (columns 0..2) + n - 1 distractors
    best_true = ranks[:, :3].min(axis=1)
    above = (ranks[:, 3:] < best_true[:, None]).sum(axis=1)
    simulated = (above < top_k).mean()
    assert accuracy.mean() == pytest.approx(simulated, abs=0.015)
    assert m.n_way_chance(n_way, top_k) == pytest.approx(simulated, abs=0.005)
    np.testing.assert_allclose(binomial, np.sqrt(accuracy * (1 - accuracy) / 50))


def test_n_way_perfect_and_adversarial_predictions():
    target = np.random.default_rng(0).normal(size=(20, 10))
    accuracy, binomial = m.n_way_top_k(target, target, n_way=5)
    assert accuracy.tolist() == [1.0] * 20 and binomial.tolist() == [0.0] * 20
    accuracy, _ = m.n_way_top_k(target, -target, n_way=2)  # the true classes score lowest: every distractor wins
    assert accuracy.tolist() == [0.0] * 20


def test_n_way_is_seeded():
    rng = np.random.default_rng(3)
    target, predicted = rng.normal(size=(30, 12)), rng.normal(size=(30, 12))
    a, _ = m.n_way_top_k(target, predicted, 2, seed=7)
    assert np.array_equal(a, m.n_way_top_k(target, predicted, 2, seed=7)[0])
    assert not np.array_equal(a, m.n_way_top_k(target, predicted, 2, seed=8)[0])


def test_n_way_errors():
    scores = np.zeros((4, 12))
    with pytest.raises(
        ValueError,
        match=r"n_way: 50-way needs at least 52 classes \(3 true \+ 49 distractors\), but the classifier has 12",
    ):
        m.n_way_top_k(scores, scores, 50)
    with pytest.raises(
        ValueError, match=r"predicted_scores: expected two arrays of one shape \(n_samples, n_classes\)"
    ):
        m.n_way_top_k(scores, scores[:, :5], 2)
    with pytest.raises(ValueError, match=r"n_way, top_k, n_trials: expected >= 2, >= 1, >= 1, got 1, 1, 100"):
        m.n_way_top_k(scores, scores, 1)
    with pytest.raises(ValueError, match=r"n_way, top_k, n_true: expected >= 2, >= 1, >= 1, got 2, 0, 3"):
        m.n_way_chance(2, top_k=0)


# --- retrieval ---------------------------------------------------------------------------------------------------


def test_retrieval_hits_chance_ties_and_distractors():
    gallery = np.eye(4)
    hits, chance = m.retrieval_top_k(gallery * 2, gallery, top_k=1)
    assert hits.tolist() == [True] * 4 and chance == 0.25
    tied = np.array([[1.0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # query 0 ties items 0 and 1
    hits, _ = m.retrieval_top_k(tied, gallery, top_k=1)
    assert hits.tolist() == [False, True, True, True]  # a tie counts against the correct item
    assert m.retrieval_top_k(tied, gallery, top_k=2)[0].tolist() == [True] * 4
    hits, chance = m.retrieval_top_k(gallery, gallery, top_k=2, distractors=np.ones((4, 4)))
    assert chance == 0.25 and hits.all()  # 2 / 8; the all-ones distractors are less similar than the own item


def test_retrieval_errors():
    with pytest.raises(ValueError, match=r"gallery: expected the queries' shape \(n, dim\) = \(3, 2\)"):
        m.retrieval_top_k(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"distractors: expected shape \(m, 2\), got \(5, 3\)"):
        m.retrieval_top_k(np.eye(2), np.eye(2), distractors=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"top_k: expected >= 1, got 0"):
        m.retrieval_top_k(np.eye(2), np.eye(2), top_k=0)


def test_flow_direction_matches_the_simulators_labels():
    from pipelines.data.twin.stimuli import direction_bin
    from pipelines.evaluation.metrics import flow_direction

    rng = np.random.default_rng(0)
    degrees = np.concatenate([[0.0, 22.4, 22.6, 90.0, 180.0, 225.0, 337.4, 337.6], rng.uniform(0, 360, 50)])
    step = np.stack([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], axis=-1)
    flows = np.broadcast_to(step[:, None, None, None, :], (len(degrees), 3, 4, 5, 2)).copy()
    flows[:, :, 0, 0] = 0.0  # static pixels do not change the direction
    measured, bins = flow_direction(flows)
    np.testing.assert_allclose(measured, degrees % 360, atol=1e-9)
    assert bins.tolist() == [direction_bin(float(d)) for d in degrees]
    with pytest.raises(ValueError, match="n_clips, n_flows, height, width, 2"):
        flow_direction(np.zeros((2, 3, 4, 2)))
    with pytest.raises(ValueError, match="n_bins"):
        flow_direction(flows, n_bins=0)
