"""Tests for the twin's procedural movies: plans, frames and exact optical flow."""

import copy
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from pipelines.data.twin import stimuli
from pipelines.data.twin.stimuli import (
    BACKGROUNDS,
    CATEGORIES,
    COLOURS,
    RunRenderer,
    StimulusConfig,
    load_backgrounds,
    plan_run,
    swap_category,
)

SMALL = StimulusConfig(height=32, width=32, fps=8, background_size=64)
MEDIUM = StimulusConfig(height=64, width=64, fps=8, background_size=128)
# One clip per scene and 4 fps: short scenes whose camera can be set freely, and motions of several pixels per
# frame, so that warping is judged on displacements the zero-flow baseline cannot hide.
WARP = StimulusConfig(height=64, width=64, fps=4, scene_clips_min=1, scene_clips_max=1, background_size=128)
# Coarse-grid pixel centres (j + 0.5) * 3 - 0.5 = 3j + 1 land exactly on full-resolution pixel centres.
THIRDS = StimulusConfig(height=48, width=48, fps=8, background_size=128)


def _render(plan: list[dict], config: StimulusConfig) -> tuple[RunRenderer, np.ndarray]:
    renderer = RunRenderer(plan, config)
    return renderer, renderer.frames(0, renderer.n_frames)


@pytest.fixture(scope="module")
def medium_run() -> tuple[list[dict], RunRenderer, np.ndarray]:
    plan = plan_run(6, MEDIUM, np.random.default_rng(0))
    renderer, frames = _render(plan, MEDIUM)
    return plan, renderer, frames


def _edit_scene(plan: list[dict], scene: int, part: str, **changes: object) -> list[dict]:
    """Copy of plan with the render parameters `part` ("camera" or "object") of one scene changed."""
    plan = copy.deepcopy(plan)
    for clip in plan:
        if clip["scene"] == scene:
            clip[part].update(changes)
    return plan


def _still_object(**changes: object) -> dict:
    """Object parameters that switch off every motion except those given."""
    still = dict(velocity=[0.0, 0.0], wave_amp=0.0, arc_radius=0.0, spin=0.0, swing_amp=0.0, pulse_amp=0.0)
    return still | dict(loom_rate=0.0, faces_motion=False) | changes


# -- config -----------------------------------------------------------------------------------------------


def test_frames_per_clip() -> None:
    assert StimulusConfig().frames_per_clip == 32
    assert SMALL.frames_per_clip == 16
    assert StimulusConfig(fps=4, clip_seconds=0.5).frames_per_clip == 2


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"height": 0}, ValueError, "height must be >= 8; got 0"),
        ({"width": 64.0}, TypeError, "width must be an int"),
        ({"fps": 0}, ValueError, "fps must be >= 1"),
        ({"background_size": 8}, ValueError, "background_size must be >= 16"),
        ({"scene_clips_min": 0}, ValueError, "scene_clips_min must be >= 1"),
        ({"clip_seconds": 0.0}, ValueError, "clip_seconds must be positive; got 0.0"),
        ({"clip_seconds": "2"}, TypeError, "clip_seconds must be a number"),
        ({"clip_seconds": 0.3}, ValueError, r"clip_seconds \* fps must be an integer >= 2.*got 0.3 \* 16"),
        ({"fps": 1, "clip_seconds": 1.0}, ValueError, "integer >= 2"),
        ({"scene_clips_min": 4, "scene_clips_max": 2}, ValueError, "scene_clips_min must be <= scene_clips_max"),
    ],
)
def test_config_rejects_bad_fields(changes: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        StimulusConfig(**changes)


# -- vocabulary and backgrounds ---------------------------------------------------------------------------


def test_vocabulary_sizes() -> None:
    assert len(CATEGORIES) >= 12 and len(set(CATEGORIES)) == len(CATEGORIES)
    assert len(COLOURS) >= 6 and all(len(rgb) == 3 and all(0 <= x <= 1 for x in rgb) for _, rgb in COLOURS)
    assert len(BACKGROUNDS) >= 10


def test_load_backgrounds() -> None:
    backgrounds = load_backgrounds(64)
    assert set(backgrounds) == set(BACKGROUNDS)
    for image in backgrounds.values():
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01
    grey = backgrounds["camera"]  # a grayscale image comes back as RGB
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    assert load_backgrounds(64) is backgrounds  # cached


@pytest.mark.parametrize(("size", "error", "match"), [(8, ValueError, "size must be >= 16"), (64.0, TypeError, "int")])
def test_load_backgrounds_rejects_bad_size(size: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_backgrounds(size)


# -- plans ------------------------------------------------------------------------------------------------


def test_plan_is_deterministic_and_seed_dependent() -> None:
    first = plan_run(12, SMALL, np.random.default_rng(7))
    assert first == plan_run(12, SMALL, np.random.default_rng(7))
    assert first != plan_run(12, SMALL, np.random.default_rng(8))


def test_frames_are_deterministic_and_seed_dependent() -> None:
    _, frames = _render(plan_run(2, SMALL, np.random.default_rng(3)), SMALL)
    _, again = _render(plan_run(2, SMALL, np.random.default_rng(3)), SMALL)
    _, other = _render(plan_run(2, SMALL, np.random.default_rng(4)), SMALL)
    np.testing.assert_array_equal(frames, again)
    assert frames.shape == (32, 32, 32, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - other).mean() > 5


def test_plan_is_json_and_complete() -> None:
    plan = plan_run(20, SMALL, np.random.default_rng(1))
    assert json.loads(json.dumps(plan)) == plan
    colours = dict(COLOURS)
    for index, clip in enumerate(plan):
        assert clip["clip"] == index
        assert isinstance(clip["scene"], int) and isinstance(clip["scene_start"], bool)
        assert clip["scene_start"] == (index == 0 or clip["scene"] != plan[index - 1]["scene"])
        assert CATEGORIES[clip["category_id"]] == clip["category"]
        assert clip["background"] in BACKGROUNDS and clip["colour"] in colours
        assert isinstance(clip["direction_deg"], float) and 0.0 <= clip["direction_deg"] < 360.0
        assert isinstance(clip["direction_bin"], int) and isinstance(clip["speed"], float)
        assert f"{clip['colour']} {clip['category']}" in clip["caption"]
    assert plan[-1]["scene"] >= 3  # scenes of 2..5 clips


def test_renderer_accepts_a_json_round_trip() -> None:
    plan = plan_run(2, SMALL, np.random.default_rng(5))
    _, frames = _render(plan, SMALL)
    _, again = _render(json.loads(json.dumps(plan)), SMALL)
    np.testing.assert_array_equal(frames, again)


def test_scenes_respect_lengths_and_balance_categories() -> None:
    plan = plan_run(300, SMALL, np.random.default_rng(2))
    starts = [clip for clip in plan if clip["scene_start"]]
    lengths = [clip["scene_clips"] for clip in starts]
    assert min(lengths[:-1]) >= SMALL.scene_clips_min and max(lengths) <= SMALL.scene_clips_max
    categories = [clip["category"] for clip in starts]
    assert all(a != b for a, b in zip(categories, categories[1:], strict=False))
    counts = [categories.count(name) for name in CATEGORIES]
    assert max(counts) - min(counts) <= 1


def test_every_clip_moves_visibly_and_bins_match_degrees() -> None:
    plan = plan_run(60, SMALL, np.random.default_rng(3))
    elapsed = (SMALL.frames_per_clip - 1) / SMALL.fps
    for clip in plan:
        assert clip["speed"] * elapsed >= 0.05 * SMALL.width
        centre = 45.0 * clip["direction_bin"]
        gap = abs((clip["direction_deg"] - centre + 180.0) % 360.0 - 180.0)
        assert gap <= 22.5 + 1e-9
    assert len({clip["direction_bin"] for clip in plan}) == 8


def test_direction_matches_the_rendered_object(medium_run: tuple) -> None:
    plan, renderer, _ = medium_run
    per_clip, checked = MEDIUM.frames_per_clip, 0
    rows, cols = np.mgrid[0 : MEDIUM.height, 0 : MEDIUM.width]
    for clip in plan:
        first, last = (renderer.object_alpha(t) for t in (clip["clip"] * per_clip, (clip["clip"] + 1) * per_clip - 1))
        if any(alpha[[0, -1]].any() or alpha[:, [0, -1]].any() for alpha in (first, last)):
            continue  # the object touches the border: its visible centroid is not the shape's
        (x0, y0), (x1, y1) = ((np.sum(a * cols) / a.sum(), np.sum(a * rows) / a.sum()) for a in (first, last))
        degrees = math.degrees(math.atan2(y1 - y0, x1 - x0))
        assert abs((degrees - clip["direction_deg"] + 180.0) % 360.0 - 180.0) < 8.0
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0, SMALL, np.random.default_rng(0)), ValueError, "n_clips must be >= 1; got 0"),
        ((2.0, SMALL, np.random.default_rng(0)), TypeError, "n_clips must be an int"),
        ((2, {"height": 32}, np.random.default_rng(0)), TypeError, "config must be a StimulusConfig"),
        ((2, SMALL, np.random.RandomState(0)), TypeError, "rng must be a numpy.random.Generator"),
    ],
)
def test_plan_run_rejects_bad_arguments(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        plan_run(*args)


def test_plan_run_reports_motion_that_cannot_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stimuli, "_PLAN_ATTEMPTS", 0)
    with pytest.raises(RuntimeError, match="could not fit a visible"):
        plan_run(2, SMALL, np.random.default_rng(0))


# -- flow -------------------------------------------------------------------------------------------------


def test_pure_camera_pan_gives_constant_flow() -> None:
    plan = plan_run(2, THIRDS, np.random.default_rng(0))  # scenes last >= 2 clips: one scene
    start, end, zoom = np.array([50.0, 70.0]), np.array([78.0, 55.0]), 1.5
    plan = _edit_scene(plan, 0, "camera", pan_start=list(start), pan_end=list(end), zoom_start=zoom, zoom_end=zoom)
    renderer = RunRenderer(plan, THIRDS)
    # The camera window moves (end - start) / (n_frames - 1) background pixels per frame; the content moves
    # the other way, shrunk by the zoom (background pixels per frame pixel).
    expected = -(end - start) / (renderer.n_frames - 1) / zoom
    for t in (0, 7, 20, renderer.n_frames - 2):
        flow, background = renderer.flow(t), renderer.object_alpha(t) <= 0.5
        assert background.mean() > 0.5
        np.testing.assert_allclose(flow[background], np.broadcast_to(expected, flow[background].shape), atol=1e-4)


def test_pure_camera_zoom_gives_radial_flow() -> None:
    plan = plan_run(2, THIRDS, np.random.default_rng(0))
    centre, zoom_start, zoom_end = [63.5, 63.5], 2.0, 1.0  # zooming in by 2x about the frame centre
    plan = _edit_scene(plan, 0, "camera", pan_start=centre, pan_end=centre, zoom_start=zoom_start, zoom_end=zoom_end)
    renderer = RunRenderer(plan, THIRDS)
    rows, cols = np.mgrid[0:48, 0:48]
    for t in (0, 15, renderer.n_frames - 2):
        # Exponential zoom: z(t) = z0 (z1 / z0) ** (t / (n - 1)); a point at offset d from the centre in frame t
        # shows background offset z(t) d, which frame t + 1 shows at offset z(t) d / z(t + 1).
        ratio = (zoom_end / zoom_start) ** (-1.0 / (renderer.n_frames - 1))
        expected = np.stack([cols - 23.5, rows - 23.5], axis=-1) * (ratio - 1.0)
        background = renderer.object_alpha(t) <= 0.5
        np.testing.assert_allclose(renderer.flow(t)[background], expected[background], atol=1e-4)


def test_translating_object_flows_with_its_velocity() -> None:
    plan = plan_run(2, THIRDS, np.random.default_rng(1))
    velocity = np.array([6.0, -4.0])  # pixels per second, starting at the centre: no bounce in 2 s
    still = _still_object(start=[24.0, 24.0], velocity=list(velocity), box=[4.0, 4.0, 44.0, 44.0])
    renderer = RunRenderer(_edit_scene(plan, 0, "object", **still), THIRDS)
    for t in (0, 9):
        inside = renderer.object_alpha(t) > 0.5
        assert inside.sum() > 20
        np.testing.assert_allclose(
            renderer.flow(t)[inside], np.broadcast_to(velocity / 8, (inside.sum(), 2)), atol=1e-4
        )


def test_spinning_object_flows_as_a_rotation() -> None:
    plan = plan_run(2, THIRDS, np.random.default_rng(2))
    spin = 1.2  # rad/s about the object's centre (24, 24)
    renderer = RunRenderer(_edit_scene(plan, 0, "object", **_still_object(start=[24.0, 24.0], spin=spin)), THIRDS)
    inside = renderer.object_alpha(3) > 0.5
    rows, cols = np.nonzero(inside)
    step = spin / THIRDS.fps
    dx, dy = cols - 24.0, rows - 24.0
    expected = np.stack(
        [math.cos(step) * dx - math.sin(step) * dy - dx, math.sin(step) * dx + math.cos(step) * dy - dy]
    )
    np.testing.assert_allclose(renderer.flow(3)[inside], expected.T, atol=1e-4)


@pytest.mark.parametrize("step", [1, 3])
def test_warping_the_next_frame_with_the_flow_reproduces_the_frame(step: int) -> None:
    plan = plan_run(3, WARP, np.random.default_rng(11))
    for scene, heading in enumerate((0.3, 2.2, 4.0)):  # pan ~1.5 output pixels per frame while zooming in
        start = np.array([62.0, 62.0])
        end = start + 1.5 * 7 * 1.25 * np.array([math.cos(heading), math.sin(heading)])
        plan = _edit_scene(
            plan, scene, "camera", pan_start=list(start), pan_end=list(end), zoom_start=1.3, zoom_end=1.2
        )
    renderer, frames = _render(plan, WARP)
    frames = frames.astype(float)
    rows, cols = np.mgrid[0:64, 0:64].astype(float)
    errors = {"background": np.zeros(2), "object": np.zeros(2)}
    for t in range(renderer.n_frames - step):
        if any(renderer.is_cut(u) for u in range(t, t + step)):
            continue
        flow = renderer.flow(t, step=step).astype(float)
        target = [rows + flow[..., 1], cols + flow[..., 0]]
        warped = np.stack([ndimage.map_coordinates(frames[t + step, ..., c], target, order=3) for c in range(3)], -1)
        alpha, alpha_next = (
            renderer.object_alpha(t),
            ndimage.map_coordinates(renderer.object_alpha(t + step), target, order=1),
        )
        clear = ~ndimage.binary_dilation((alpha > 0) & (alpha < 1), iterations=2)  # away from object edges
        clear &= (target[0] >= 2) & (target[0] <= 61) & (target[1] >= 2) & (target[1] <= 61)  # and frame borders
        clear &= np.hypot(flow[..., 0], flow[..., 1]) >= 1.0  # where zero flow is a fair baseline
        for name, layer in (
            ("background", (alpha == 0) & (alpha_next == 0)),
            ("object", (alpha == 1) & (alpha_next == 1)),
        ):
            mask = layer & clear
            errors[name] += [np.abs(warped - frames[t])[mask].sum(), np.abs(frames[t + step] - frames[t])[mask].sum()]
    for name, (warp_error, zero_flow_error) in errors.items():
        assert zero_flow_error > 0, name
        assert warp_error < 0.3 * zero_flow_error, name


def test_coarse_flow_samples_the_full_flow_at_coarse_pixel_centres() -> None:
    plan = plan_run(2, THIRDS, np.random.default_rng(4))
    renderer = RunRenderer(plan, THIRDS)
    for t in (0, 5, 17):
        full, coarse = renderer.flow(t), renderer.flow(t, 16, 16)
        np.testing.assert_allclose(coarse, full[1::3, 1::3] / 3.0, atol=1e-5)
        np.testing.assert_array_equal(
            renderer.object_alpha(t, 16, 16) > 0.5, renderer.object_alpha(t)[1::3, 1::3] > 0.5
        )


def test_coarse_flow_on_a_non_integer_grid(medium_run: tuple) -> None:
    _, renderer, _ = medium_run
    t = 3
    full, coarse = renderer.flow(t), renderer.flow(t, 16, 16)
    assert coarse.shape == (16, 16, 2) and coarse.dtype == np.float32
    # Coarse centre j sits at 4j + 1.5: the mean of full pixels 4j + 1 and 4j + 2 along each axis. The
    # background flow is affine, so the mean is exact wherever all four pixels are background.
    blocks = full[1:61, 1:61].reshape(15, 4, 15, 4, 2)[:, :2, :, :2]
    mean = blocks.mean(axis=(1, 3)) / 4.0
    background = renderer.object_alpha(t)[1:61, 1:61].reshape(15, 4, 15, 4)[:, :2, :, :2].max(axis=(1, 3)) <= 0.5
    background &= renderer.object_alpha(t, 16, 16)[:15, :15] <= 0.5
    assert background.sum() > 100
    np.testing.assert_allclose(coarse[:15, :15][background], mean[background], atol=1e-5)


def test_cuts_have_undefined_flow(medium_run: tuple) -> None:
    plan, renderer, _ = medium_run
    per_clip = MEDIUM.frames_per_clip
    scene_ends = {(clip["clip"] + clip["scene_clips"] - clip["scene_clip"]) * per_clip - 1 for clip in plan}
    assert len(scene_ends) >= 2
    for t in range(renderer.n_frames):
        assert renderer.is_cut(t) == (t in scene_ends)
    for t in sorted(scene_ends):
        assert np.isnan(renderer.flow(t)).all() and np.isnan(renderer.flow(t, 8, 8)).all()
    assert np.isfinite(renderer.flow(0)).all() and np.isfinite(renderer.flow(per_clip)).all()
    for t in range(renderer.n_frames):  # a gap of 4 frames is undefined when any of its steps crosses a cut
        crosses = any(t + d in scene_ends for d in range(4)) or t + 4 >= renderer.n_frames
        assert np.isnan(renderer.flow(t, 8, 8, step=4)).all() == crosses, t
        assert np.isnan(renderer.flow(t, 8, 8, step=4)).any() == crosses, t


def test_flow_over_several_frames_is_the_chained_flow(medium_run: tuple) -> None:
    _, renderer, _ = medium_run
    # Background points (away from the object) follow the camera; chaining two one-frame flows, sampling the
    # second where the first lands, gives the two-frame flow up to interpolation error.
    t = 1
    first, second, both = renderer.flow(t), renderer.flow(t + 1), renderer.flow(t, step=2)
    rows, cols = np.mgrid[0:64, 0:64].astype(float)
    target = [rows + first[..., 1], cols + first[..., 0]]
    chained = first + np.stack([ndimage.map_coordinates(second[..., c], target, order=1) for c in range(2)], -1)
    away = ~ndimage.binary_dilation(renderer.object_alpha(t) > 0, iterations=6)
    away &= (target[0] >= 1) & (target[0] <= 62) & (target[1] >= 1) & (target[1] <= 62)
    assert away.sum() > 1000
    np.testing.assert_allclose(both[away], chained[away], atol=1e-3)


def test_object_alpha_matches_the_composited_object(medium_run: tuple) -> None:
    plan, renderer, frames = medium_run
    alpha = renderer.object_alpha(5)
    assert alpha.dtype == np.float32 and alpha.min() >= 0.0 and alpha.max() == 1.0
    # Object pixels carry the object's colour texture; the background image is unchanged outside them.
    background = RunRenderer(
        _edit_scene(plan, 0, "object", start=[-500.0, -500.0], box=[-500, -500, -400, -400]), MEDIUM
    )
    changed = np.abs(frames[5].astype(int) - background.frames(5, 6)[0]).max(axis=-1) > 0
    np.testing.assert_array_equal(changed & (alpha == 0), np.zeros_like(changed))
    assert changed[alpha == 1].mean() > 0.9


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.frames(0, r.n_frames + 1), IndexError, r"range \[0, 97\) is out of range.*n_frames = 96"),
        (lambda r: r.frames(-1, 3), IndexError, "out of range"),
        (lambda r: r.frames(3, 3), ValueError, "expected start < stop; got start=3, stop=3"),
        (lambda r: r.frames(0.0, 3), TypeError, "frame index must be an int"),
        (lambda r: r.flow(96), IndexError, r"frame index 96 is out of range; expected 0 <= t < n_frames = 96"),
        (lambda r: r.flow(-1), IndexError, "frame index -1 is out of range"),
        (lambda r: r.flow("0"), TypeError, "frame index must be an int"),
        (lambda r: r.flow(0, 0, 16), ValueError, "height must be >= 1 pixel; got 0"),
        (lambda r: r.flow(0, 16, 8.0), TypeError, "width must be an int or None"),
        (lambda r: r.flow(0, step=0), ValueError, "step must be >= 1 frame; got 0"),
        (lambda r: r.flow(0, step=2.0), TypeError, "step must be an int; got float 2.0"),
        (lambda r: r.object_alpha(96), IndexError, "object_alpha: frame index 96 is out of range"),
        (lambda r: r.object_alpha(0, 16, -2), ValueError, "width must be >= 1"),
        (lambda r: r.is_cut(96), IndexError, "is_cut: frame index 96 is out of range"),
    ],
)
def test_renderer_rejects_bad_indices(medium_run: tuple, call: object, error: type, match: str) -> None:
    _, renderer, _ = medium_run
    with pytest.raises(error, match=match):
        call(renderer)


def _swap_scene_of_second_clip(plan: list[dict]) -> list[dict]:
    plan = copy.deepcopy(plan)
    plan[1]["scene"] = 5
    return plan


def _change_second_camera(plan: list[dict]) -> list[dict]:
    plan = copy.deepcopy(plan)
    plan[1]["camera"]["zoom_end"] += 0.1
    return plan


def _drop_key(plan: list[dict]) -> list[dict]:
    plan = copy.deepcopy(plan)
    del plan[0]["object"]
    return plan


def _unknown_background(plan: list[dict]) -> list[dict]:
    plan = copy.deepcopy(plan)
    plan[0]["background"] = "mars"
    return plan


def _camera_outside(plan: list[dict]) -> list[dict]:
    return _edit_scene(plan, 0, "camera", pan_start=[10.0, 32.0], pan_end=[10.0, 32.0], zoom_start=1.0, zoom_end=1.0)


def _renumber(plan: list[dict]) -> list[dict]:
    plan = copy.deepcopy(plan)
    plan[0]["clip"] = 3
    return plan


@pytest.mark.parametrize(
    ("make", "config", "error", "match"),
    [
        (lambda plan: [], SMALL, ValueError, "plan must be a non-empty list"),
        (lambda plan: {0: plan[0]}, SMALL, TypeError, "plan must be a list of clip dicts"),
        (_unknown_background, SMALL, ValueError, r"names background 'mars'.*expected one of BACKGROUNDS"),
        (
            _camera_outside,
            SMALL,
            ValueError,
            r"plan\[0\]\['camera'\] samples background pixels .* expected within \[0, 63\]",
        ),
        (
            lambda plan: plan,
            MEDIUM,
            ValueError,
            r"= \(\[32, 32\], 8, 16, 64\); this config gives \(\[64, 64\], 8, 16, 128\)",
        ),
        (lambda plan: plan, {"height": 32}, TypeError, "config must be a StimulusConfig"),
        (lambda plan: [plan[0], "clip"], SMALL, TypeError, r"plan\[1\] must be a dict"),
        (_drop_key, SMALL, ValueError, r"plan\[0\] lacks the keys \['object'\]"),
        (_renumber, SMALL, ValueError, r"plan\[0\]\['clip'\] is 3; expected 0"),
        (_swap_scene_of_second_clip, SMALL, ValueError, r"plan\[1\] has scene=5.*expected scene=1"),
        (_change_second_camera, SMALL, ValueError, r"plan\[1\]\['camera'\] differs from that of plan\[0\]"),
    ],
)
def test_renderer_rejects_bad_plans(make: object, config: object, error: type, match: str) -> None:
    plan = plan_run(3, SMALL, np.random.default_rng(0))
    assert plan[1]["scene"] == 0  # scenes last >= 2 clips
    with pytest.raises(error, match=match):
        RunRenderer(make(plan), config)


def test_swap_category_changes_the_object_and_its_verb_only() -> None:
    caption = "a red ball bouncing to the left in front of grass, static camera"
    assert (
        swap_category(caption, "ball", "cross")
        == "a red cross spinning fast to the left in front of grass, static camera"
    )
    assert swap_category(swap_category(caption, "ball", "star"), "star", "ball") == caption
    for clip in plan_run(12, SMALL, np.random.default_rng(3)):
        other = CATEGORIES[(clip["category_id"] + 1) % len(CATEGORIES)]
        swapped = swap_category(clip["caption"], clip["category"], other)
        assert swapped != clip["caption"] and f" {other} " in swapped and f" {clip['colour']} " in swapped


@pytest.mark.parametrize(
    ("category", "other", "match"),
    [
        ("ball", "ball", "another category than the caption's, got 'ball' twice"),
        ("ball", "dog", r"other expected one of \[.*\], got 'dog'"),
        ("dog", "ball", r"category expected one of \[.*\], got 'dog'"),
        ("star", "ball", "expected the caption to contain 'star spinning', got 'a red ball bouncing"),
    ],
)
def test_swap_category_errors(category: str, other: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        swap_category("a red ball bouncing upwards in front of grass, static camera", category, other)
