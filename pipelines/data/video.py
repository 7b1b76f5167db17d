"""Video I/O with PyAV: decode an mp4 to frames at a target rate and size; write H.264 mp4 that browsers play."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's first video stream says about itself."""

    path: str
    n_frames: int  # frames in the stream (counted from the container, or fps x duration)
    fps: float  # average frame rate
    duration: float  # seconds
    height: int
    width: int
    codec: str


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video file {path} does not exist.")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise ValueError(
            f"{path} is not a readable video: expected an mp4 (or other FFmpeg-readable video), "
            f"got an error from FFmpeg: {err}"
        ) from err
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream: expected one, found {len(container.streams)} other stream(s).")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Read the frame count, frame rate, duration and size of a video without decoding it.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If FFmpeg cannot read it or it has no video stream.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        n_frames = stream.frames or int(round(duration * fps))
        if fps <= 0 or n_frames <= 0:
            raise ValueError(
                f"{path}: expected a video with a positive frame rate and frame count, got fps={fps}, frames={n_frames}."
            )
        return VideoInfo(
            str(path), n_frames, fps, n_frames / fps, stream.height, stream.width, stream.codec_context.name
        )


def resize_center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB frame so it covers (height, width), then crop the centre.

    Parameters
    ----------
    frame : array of shape (in_height, in_width, 3), uint8
    height, width : int
        Output size.

    Returns
    -------
    array of shape (height, width, 3), uint8
    """
    in_h, in_w = frame.shape[:2]
    if (in_h, in_w) == (height, width):
        return frame
    scale = max(height / in_h, width / in_w)
    new_h, new_w = max(height, round(in_h * scale)), max(width, round(in_w * scale))
    img = Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=2.0)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.asarray(img)[top : top + height, left : left + width]


def source_indices(n_out: int, fps_out: float, fps_in: float, start: float = 0.0) -> np.ndarray:
    """Indices of the source frames shown at times ``start + k / fps_out``, k = 0..n_out-1.

    The frame shown at time t is the one that started last: ``floor(t * fps_in)`` (with a small tolerance so
    that exact multiples are not lost to rounding).
    """
    times = start + np.arange(n_out) / fps_out
    return np.floor(times * fps_in + 1e-6).astype(np.int64)


def read_frames(
    path: str | Path,
    indices: np.ndarray,
    size: tuple[int, int] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Decode the frames with the given source indices (in any order, repeats allowed).

    Parameters
    ----------
    path : str or Path
    indices : array of shape (n_frames,), int
        0-based frame numbers in decoding order.
    size : (height, width), optional
        Resize and centre-crop each frame to this size.
    transform : callable, optional
        Applied to each decoded RGB frame (after ``size``) as it is decoded, so only transformed frames are held
        in memory; it must return frames of one shape.

    Returns
    -------
    array of shape (n_frames, height, width, 3), uint8

    Raises
    ------
    ValueError
        If the video is unreadable or shorter than the largest requested index.
    """
    indices = np.asarray(indices, dtype=np.int64)
    wanted = np.unique(indices)
    if wanted.size and wanted[0] < 0:
        raise ValueError(f"{path}: frame indices must be >= 0, got {wanted[0]}.")
    decoded: dict[int, np.ndarray] = {}
    last = int(wanted[-1]) if wanted.size else -1
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pos = 0
        k = 0
        try:
            for frame in container.decode(stream):
                if pos > last:
                    break
                if k < wanted.size and pos == wanted[k]:
                    rgb = frame.to_ndarray(format="rgb24")
                    rgb = rgb if size is None else resize_center_crop(rgb, *size)
                    decoded[pos] = rgb if transform is None else transform(rgb)
                    k += 1
                pos += 1
        except av.error.FFmpegError as err:
            raise ValueError(f"{path}: decoding failed at frame {pos}: {err}") from err
    if pos <= last:
        raise ValueError(f"{path}: expected at least {last + 1} frames, found {pos}.")
    if not decoded:
        return np.zeros((0, *(size or (0, 0)), 3), np.uint8)
    return np.stack([decoded[int(i)] for i in indices])


def read_video(
    path: str | Path,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a whole video, optionally resampled to ``fps`` and resized / centre-cropped to ``size``.

    Returns
    -------
    array of shape (n_frames, height, width, 3), uint8
    """
    info = probe_video(path)
    if fps is None:
        indices = np.arange(info.n_frames)
    else:
        n_out = int(math.floor(info.duration * fps + 1e-6))
        indices = source_indices(n_out, fps, info.fps)
        indices = indices[indices < info.n_frames]
    return read_frames(path, indices, size)


class VideoWriter:
    """Stream RGB frames into an H.264 (yuv420p) mp4 that browsers play; use as a context manager.

    Parameters
    ----------
    path : str or Path
        Output file (``.mp4``); parent folders are created.
    height, width : int
        Frame size; both must be even (a yuv420p requirement).
    fps : float
    crf : int
        x264 constant rate factor (lower = better; 18 is visually lossless).
    """

    def __init__(self, path: str | Path, height: int, width: int, fps: float, crf: int = 18):
        if height % 2 or width % 2:
            raise ValueError(
                f"frames: H.264 yuv420p needs even height and width, got {height}x{width}; crop or pad by one pixel."
            )
        self.path, self.size = Path(path), (height, width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}

    def write(self, frames: np.ndarray) -> None:
        """Append frames: array of shape (n_frames, height, width, 3), uint8."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != (*self.size, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"frames: expected a uint8 array of shape (n_frames, {self.size[0]}, {self.size[1]}, 3), "
                f"got {frames.dtype} array of shape {frames.shape}."
            )
        for rgb in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write RGB frames, array of shape (n_frames, height, width, 3), uint8, as an H.264 mp4 (see VideoWriter)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(
            f"frames: expected a non-empty uint8 array of shape (n_frames, height, width, 3), "
            f"got {frames.dtype} array of shape {frames.shape}."
        )
    with VideoWriter(path, frames.shape[1], frames.shape[2], fps, crf) as writer:
        writer.write(frames)
    return Path(path)
