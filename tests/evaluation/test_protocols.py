"""pipelines.evaluation.protocols: the presets as data, frame sampling and resizing."""

import dataclasses

import numpy as np
import pytest

from pipelines.evaluation.metrics import n_way_chance
from pipelines.evaluation.protocols import PROTOCOLS, Protocol, frame_indices, load_protocol, resize_videos


def test_the_four_published_protocols_are_presets():
    assert set(PROTOCOLS) == {"mind-animator", "mindvideo", "neuroclips", "brainnrds"}
    for name in PROTOCOLS:
        protocol = load_protocol(name)
        assert protocol.name == name and protocol.metrics and protocol.source


def test_presets_record_each_papers_variants():
    ma, mv, nc, nrds = (load_protocol(n) for n in ("mind-animator", "mindvideo", "neuroclips", "brainnrds"))
    assert (ma.n_frames, ma.resolution, ma.ssim, ma.clip_pcc, ma.clip_pcc_gate) == (8, 512, "colour", "adjacent", 0.6)
    assert (mv.n_frames, mv.fps, mv.resolution, mv.averaging) == (6, 3.0, 256, "frame_position")
    assert (nc.ssim, nc.clip_pcc, nc.clip_pcc_gate) == ("gray", "all_pairs", None)
    assert (nrds.flow, nrds.flow_resolution, nrds.flow_stride) == ("raft", 32, 2)
    assert {"hue_pcc", "epe", "vifi", "2way_i", "2way_v"} <= set(ma.metrics)
    assert mv.n_way() == [
        ("2way_i", 2, "frame"),
        ("50way_i", 50, "frame"),
        ("2way_v", 2, "video"),
        ("50way_v", 50, "video"),
    ]
    assert n_way_chance(50) == pytest.approx(3 / 52)


def test_overrides_and_files(tmp_path):
    protocol = load_protocol("mind-animator", ["hue=bgr_quirk", "n_way_trials=20", "metrics=[ssim, 10way_i]"])
    assert (protocol.hue, protocol.n_way_trials, protocol.metrics) == ("bgr_quirk", 20, ("ssim", "10way_i"))
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nsource: a test\nn_frames: 4\nfps: 2.0\nresolution: 32\naveraging: clip\nmetrics: [psnr]\n"
    )
    assert load_protocol(path).metrics == ("psnr",)


def test_protocol_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown protocols preset 'mindanimator'; expected one of \['brainnrds', "):
        load_protocol("mindanimator")
    with pytest.raises(FileNotFoundError, match=r"Config file .*missing.yaml does not exist"):
        load_protocol(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"unknown metric 'lpips'; expected one of \['ssim', .* or an n-way metric"):
        load_protocol("mindvideo", ["metrics=[ssim, lpips]"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['ssim_window'\] for Protocol"):
        load_protocol("mindvideo", ["ssim_window=11"])
    with pytest.raises(ValueError, match=r"ssim: expected one of \['colour', 'gray'\], got 'color'"):
        load_protocol("mindvideo", ["ssim=color"])
    with pytest.raises(ValueError, match=r"expected n_frames >= 2, fps > 0 and resolution >= 11, got 1, 3.0 and 256"):
        load_protocol("mindvideo", ["n_frames=1"])
    with pytest.raises(ValueError, match=r"flow_stride: expected 1 to 5, got 6"):
        load_protocol("mindvideo", ["flow_stride=6"])


def test_frame_indices_follow_each_papers_sampling():
    ma = dataclasses.replace(load_protocol("mind-animator"), fps=3.75)  # MA's code: every 8th frame of 30 fps
    assert frame_indices(ma, 60, 30.0).tolist() == [0, 8, 16, 24, 32, 40, 48, 56]
    mv = load_protocol("mindvideo")  # 3 Hz from 30 fps: every 10th frame
    assert frame_indices(mv, 60, 30.0).tolist() == [0, 10, 20, 30, 40, 50]
    assert frame_indices(load_protocol("mind-animator"), 32, 16.0).tolist() == [0, 4, 8, 12, 16, 20, 24, 28]


def test_frame_indices_reject_short_clips():
    with pytest.raises(
        ValueError, match=r"compares 6 frames at 3.0 fps \(1.67 s\), but the clips have 4 frames at 4.0 fps"
    ):
        frame_indices(load_protocol("mindvideo"), 4, 4.0)


def test_resize_videos():
    videos = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
    assert resize_videos(videos, 8) is videos
    big = resize_videos(videos, 16)
    assert big.shape == (2, 3, 16, 16, 3) and big.dtype == np.uint8
    flat = np.full((1, 2, 8, 8, 3), 77, np.uint8)
    assert (resize_videos(flat, 32) == 77).all()  # bilinear keeps a constant frame constant


def test_protocol_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_protocol("mindvideo").n_frames = 8  # type: ignore[misc]
    assert isinstance(load_protocol("mindvideo"), Protocol)
