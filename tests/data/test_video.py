"""pipelines.data.video: H.264 round trip, frame-rate resampling, resize / centre crop, bad files."""

import numpy as np
import pytest
from skimage import data as skdata
from skimage.transform import resize

from pipelines.data.video import (
    VideoWriter,
    probe_video,
    read_frames,
    read_video,
    resize_center_crop,
    source_indices,
    write_video,
)


def numbered_frames(n: int, size: int = 32) -> np.ndarray:
    """Flat frames whose grey level encodes the frame number (survives compression)."""
    levels = (np.arange(n) * 8 % 240 + 8).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, size, size, 3)).copy()


def test_write_is_browser_playable_h264_and_round_trips(tmp_path):
    frames = numbered_frames(24)
    path = write_video(tmp_path / "a.mp4", frames, fps=8)
    info = probe_video(path)
    assert (info.codec, info.n_frames, info.fps, info.height, info.width) == ("h264", 24, 8.0, 32, 32)
    assert info.duration == pytest.approx(3.0)
    import av

    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    back = read_video(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).max() <= 2


def test_natural_image_quality(tmp_path):
    img = (resize(skdata.astronaut(), (64, 64)) * 255).astype(np.uint8)
    frames = np.stack([np.roll(img, k, axis=1) for k in range(8)])
    back = read_video(write_video(tmp_path / "n.mp4", frames, fps=8))
    psnr = 10 * np.log10(255**2 / np.mean((back.astype(float) - frames) ** 2))
    assert psnr > 30


def test_resampling_picks_the_frame_shown_at_each_time(tmp_path):
    # 30 fps source, 4 fps target: times 0, .25, .5 … → floor(t * 30) = 0, 7, 15, 22, 30, 37, 45, 52.
    np.testing.assert_array_equal(source_indices(8, 4, 30), [0, 7, 15, 22, 30, 37, 45, 52])
    np.testing.assert_array_equal(source_indices(4, 8, 16, start=2.0), [32, 34, 36, 38])
    path = write_video(tmp_path / "b.mp4", numbered_frames(32), fps=16)
    back = read_video(path, fps=4)
    assert back.shape[0] == 8
    expected = numbered_frames(32)[::4, 0, 0, 0]
    np.testing.assert_allclose(back[:, 0, 0, 0], expected, atol=2)


def test_read_frames_any_order_and_size(tmp_path):
    path = write_video(tmp_path / "c.mp4", numbered_frames(10), fps=5)
    out = read_frames(path, np.array([7, 2, 2]), size=(16, 8))
    assert out.shape == (3, 16, 8, 3)
    np.testing.assert_allclose(out[:, 0, 0, 0], numbered_frames(10)[[7, 2, 2], 0, 0, 0], atol=2)


def test_resize_center_crop_keeps_the_centre():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, 20:60] = 255  # the central square is white
    out = resize_center_crop(frame, 20, 20)
    assert out.shape == (20, 20, 3)
    assert out[:, 2:-2].min() > 200


def test_streaming_writer(tmp_path):
    with VideoWriter(tmp_path / "s.mp4", 16, 16, fps=4) as w:
        w.write(numbered_frames(3, 16))
        w.write(numbered_frames(5, 16))
        with pytest.raises(ValueError, match=r"expected a uint8 array of shape \(n_frames, 16, 16, 3\)"):
            w.write(np.zeros((1, 8, 8, 3), np.uint8))
    assert probe_video(tmp_path / "s.mp4").n_frames == 8


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4 does not exist"):
        read_video(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(ValueError, match="junk.mp4 is not a readable video"):
        probe_video(junk)
    with pytest.raises(ValueError, match="needs even height and width, got 15x16"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8), fps=4)
    with pytest.raises(ValueError, match="expected a non-empty uint8 array"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 16, 16, 3), np.float32), fps=4)
    short = write_video(tmp_path / "short.mp4", numbered_frames(4), fps=4)
    with pytest.raises(ValueError, match="short.mp4: expected at least 10 frames, found 4"):
        read_frames(short, np.array([9]))
    with pytest.raises(ValueError, match="frame indices must be >= 0"):
        read_frames(short, np.array([-1]))


def test_transform_is_applied_while_decoding(tmp_path):
    path = write_video(tmp_path / "t.mp4", numbered_frames(6), fps=6)
    out = read_frames(path, np.array([1, 4]), transform=lambda f: f[:4, :2] // 2)
    assert out.shape == (2, 4, 2, 3)
    np.testing.assert_allclose(out[:, 0, 0, 0], numbered_frames(6)[[1, 4], 0, 0, 0] // 2, atol=1)
