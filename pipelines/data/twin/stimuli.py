"""Procedural movies for the simulated subject: frames, exact optical flow and per-clip labels.

A run is a sequence of clips (one clip = one fMRI TR) grouped into scenes. A scene shows one natural-image
background seen through a panning / zooming camera and one textured object moving with the motion of its
category; a scene cut starts the next scene. :func:`plan_run` draws the run from a ``numpy.random.Generator``
and returns one JSON-serialisable dict per clip; :class:`RunRenderer` re-renders any frame of that plan and
its exact forward optical flow, because both are analytic functions of the plan.

Geometry (all in pixels of the frame, x rightwards, y downwards, pixel centres at integer coordinates):

- Camera: output pixel ``p`` samples the background at ``B = c(t) + z(t) * (p - p0)``, ``p0`` the frame
  centre, ``c`` linear in time from ``camera["pan_start"]`` to ``camera["pan_end"]`` and ``z`` exponential
  from ``camera["zoom_start"]`` to ``camera["zoom_end"]`` over ``camera["duration"]`` seconds (first to last
  frame of the scene). The background is blurred by ``camera["blur_sigma"]`` to limit aliasing.
- Object: a shape in unit coordinates ``q`` is drawn at ``p = c_o(t) + s(t) R(theta(t)) M(t) q`` with
  ``M = diag(mirror, 1)``. ``c_o`` is a drift folded (reflected) into ``object["box"]`` plus a wave along
  ``object["wave_dir"]`` plus a circular arc; ``theta`` spins and swings; ``s`` looms and pulses. See
  ``_object_track`` for the formulas and ``_sample_object`` for the parameters.

Time inside a scene is ``tau = k / fps`` for the scene's k-th frame.
"""

import copy
import functools
import importlib.util
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLOURS",
    "RunRenderer",
    "StimulusConfig",
    "load_backgrounds",
    "plan_run",
    "swap_category",
]


@dataclass(frozen=True)
class StimulusConfig:
    """Size, timing and scene structure of the procedural movies.

    Raises
    ------
    TypeError
        If a size, fps or scene length is not an int, or clip_seconds is not a number.
    ValueError
        If a field is out of range, ``fps * clip_seconds`` is not a whole number >= 2, or
        ``scene_clips_min > scene_clips_max``.
    """

    height: int = 128  # frame height in pixels
    width: int = 128  # frame width in pixels
    fps: int = 16  # frames per second
    clip_seconds: float = 2.0  # one clip = one fMRI TR
    scene_clips_min: int = 2  # a scene lasts at least this many clips (the run's last scene may be cut short)
    scene_clips_max: int = 5  # ... and at most this many; a scene cut follows
    background_size: int = 256  # backgrounds are centre-cropped to a square and resized to this

    def __post_init__(self) -> None:
        minimum = {"height": 8, "width": 8, "fps": 1, "scene_clips_min": 1, "scene_clips_max": 1, "background_size": 16}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"StimulusConfig.{name} must be an int; got {type(value).__name__} {value!r}.")
            if value < low:
                raise ValueError(f"StimulusConfig.{name} must be >= {low}; got {value}.")
        seconds = self.clip_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"StimulusConfig.clip_seconds must be a number; got {type(seconds).__name__} {seconds!r}.")
        if not seconds > 0:
            raise ValueError(f"StimulusConfig.clip_seconds must be positive; got {seconds!r}.")
        frames = self.fps * seconds
        if abs(frames - round(frames)) > 1e-9 or round(frames) < 2:
            raise ValueError(
                f"StimulusConfig.clip_seconds * fps must be an integer >= 2 (frames per clip); got "
                f"{seconds} * {self.fps} = {frames:g}. Pick clip_seconds so that fps * clip_seconds is whole."
            )
        if self.scene_clips_min > self.scene_clips_max:
            raise ValueError(
                f"StimulusConfig.scene_clips_min must be <= scene_clips_max; got {self.scene_clips_min} > "
                f"{self.scene_clips_max}."
            )

    @property
    def frames_per_clip(self) -> int:
        """Number of frames in one clip, ``fps * clip_seconds``."""
        return round(self.fps * self.clip_seconds)


# ---------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Motion:
    """How objects of one category move; ranges are sampled uniformly per scene."""

    verb: str  # caption phrase, e.g. "bouncing"
    speed: tuple[float, float]  # drift speed, frame widths per second
    heading: str = "any"  # drift direction: "any", "horizontal" or "diagonal"
    spin: tuple[float, float] = (0.0, 0.0)  # |angular velocity|, rad/s, random sign
    wave: str = "none"  # "none", "sine" / "zigzag" (across the drift) or "vertical"
    wave_amp: tuple[float, float] = (0.0, 0.0)  # wave amplitude, frame widths
    wave_freq: tuple[float, float] = (0.0, 0.0)  # Hz
    swing: tuple[float, float] = (0.0, 0.0)  # pendulum / wiggle amplitude, rad
    swing_freq: tuple[float, float] = (0.0, 0.0)  # Hz
    pulse: tuple[float, float] = (0.0, 0.0)  # relative scale oscillation amplitude
    pulse_freq: tuple[float, float] = (0.0, 0.0)  # Hz
    loom: tuple[float, float] = (1.0, 1.0)  # scale growth factor over the whole scene
    arc_radius: tuple[float, float] = (0.0, 0.0)  # circular-arc radius, frame widths
    arc_speed: tuple[float, float] = (0.0, 0.0)  # |angular speed| along the arc, rad/s
    size: tuple[float, float] = (0.22, 0.36)  # larger side of the object at scene start, frame widths
    upright: bool = False  # start unrotated (else at a random angle)
    faces_motion: bool = False  # mirror the shape so that it faces its horizontal direction of travel


_MOTIONS: dict[str, _Motion] = {
    "ball": _Motion("bouncing", speed=(0.25, 0.4), spin=(0.5, 2.0), size=(0.2, 0.3)),
    "car": _Motion("driving", speed=(0.4, 0.6), heading="horizontal", size=(0.3, 0.4), upright=True, faces_motion=True),
    "bird": _Motion(
        "flying", speed=(0.18, 0.3), wave="vertical", wave_amp=(0.05, 0.08), wave_freq=(0.6, 1.0), upright=True
    ),
    "fish": _Motion(
        "swimming",
        speed=(0.06, 0.12),
        wave="sine",
        wave_amp=(0.03, 0.05),
        wave_freq=(0.3, 0.5),
        swing=(0.1, 0.2),
        swing_freq=(0.8, 1.2),
        upright=True,
        faces_motion=True,
    ),
    "star": _Motion("spinning", speed=(0.1, 0.22), spin=(1.5, 3.0)),
    "box": _Motion("drifting", speed=(0.12, 0.25), heading="diagonal", spin=(0.0, 0.3)),
    "ring": _Motion("looming", speed=(0.06, 0.15), spin=(0.2, 0.6), loom=(1.6, 2.4), size=(0.16, 0.22)),
    "cross": _Motion("spinning fast", speed=(0.1, 0.2), spin=(3.5, 5.5)),
    "heart": _Motion("pulsing", speed=(0.08, 0.18), pulse=(0.12, 0.2), pulse_freq=(0.8, 1.4), upright=True),
    "diamond": _Motion("zigzagging", speed=(0.15, 0.25), wave="zigzag", wave_amp=(0.06, 0.1), wave_freq=(0.4, 0.6)),
    "moon": _Motion("gliding along an arc", speed=(0.0, 0.03), arc_radius=(0.18, 0.26), arc_speed=(0.3, 0.6)),
    "stick": _Motion("swinging", speed=(0.08, 0.18), swing=(0.4, 0.7), swing_freq=(0.5, 0.8), upright=True),
}

CATEGORIES: tuple[str, ...] = tuple(_MOTIONS)

COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.9, 0.1, 0.1)),
    ("orange", (1.0, 0.55, 0.05)),
    ("yellow", (0.95, 0.9, 0.1)),
    ("green", (0.1, 0.75, 0.2)),
    ("cyan", (0.1, 0.85, 0.9)),
    ("blue", (0.15, 0.3, 0.95)),
    ("purple", (0.6, 0.2, 0.85)),
    ("pink", (1.0, 0.45, 0.75)),
    ("white", (0.97, 0.97, 0.97)),
)

_BACKGROUND_CAPTIONS: dict[str, str] = {
    "astronaut": "an astronaut",
    "chelsea": "a cat",
    "coffee": "a cup of coffee",
    "rocket": "a rocket on its launch pad",
    "hubble_deep_field": "a field of galaxies",
    "retina": "a retina",
    "immunohistochemistry": "stained tissue",
    "camera": "a cameraman",
    "moon": "the lunar surface",
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "coins": "old coins",
    "clock": "a clock",
    "china": "a temple",
    "flower": "a flower",
}

BACKGROUNDS: tuple[str, ...] = tuple(_BACKGROUND_CAPTIONS)

_SKLEARN_IMAGES = {"china": "china.jpg", "flower": "flower.jpg"}

# 45-degree bins centred on 0, 45, ... degrees; image coordinates (90 degrees = downwards).
_DIRECTION_WORDS = (
    "to the right",
    "down and to the right",
    "downwards",
    "down and to the left",
    "to the left",
    "up and to the left",
    "upwards",
    "up and to the right",
)

_TEXTURES = ("stripes", "checker", "spots")

# Every clip's object moves at least this far (in frame widths) between its first and last frame.
_MIN_CLIP_TRAVEL = 0.06
_PLAN_ATTEMPTS = 1000


# ---------------------------------------------------------------------------------------------------------
# Shapes: signed distance in unit object coordinates (negative inside), x rightwards, y downwards
# ---------------------------------------------------------------------------------------------------------

_Sdf = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _circle(u: np.ndarray, v: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(u - cx, v - cy) - r


def _box(u: np.ndarray, v: np.ndarray, cx: float, cy: float, hx: float, hy: float, r: float) -> np.ndarray:
    """Rounded rectangle with half sizes (hx, hy) and corner radius r."""
    qx = np.abs(u - cx) - (hx - r)
    qy = np.abs(v - cy) - (hy - r)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _segment(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Unsigned distance to the segment from a to b."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    wx, wy = u - a[0], v - a[1]
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    return np.hypot(wx - t * ex, wy - t * ey)


def _halfplane(u: np.ndarray, v: np.ndarray, point: tuple[float, float], normal: tuple[float, float]) -> np.ndarray:
    """Signed distance to the line through point, positive on the side normal points to."""
    norm = math.hypot(*normal)
    return ((u - point[0]) * (normal[0] / norm)) + ((v - point[1]) * (normal[1] / norm))


def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """First-order signed distance to an ellipse (accurate near its boundary, which is all alpha needs)."""
    x, y = u - cx, v - cy
    k = np.hypot(x / a, y / b)
    gradient = np.hypot(x / (a * a), y / (b * b))
    return (k - 1.0) * k / (gradient + 1e-6)


def _sd_ball(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _circle(u, v, 0.0, 0.0, 1.0)


def _sd_car(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    body = _box(u, v, 0.0, 0.1, 1.0, 0.28, 0.1)
    cabin = _box(u, v, -0.15, -0.26, 0.5, 0.24, 0.14)
    wheels = _circle(np.abs(u), v, 0.58, 0.42, 0.22)
    return np.minimum(np.minimum(body, cabin), wheels)


def _sd_bird(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = np.abs(u)
    inner = _segment(x, v, (0.0, 0.05), (0.42, -0.3))
    outer = _segment(x, v, (0.42, -0.3), (0.95, -0.2))
    body = _circle(u, v, 0.0, 0.12, 0.25)
    return np.minimum(np.minimum(inner, outer) - 0.15, body)


def _sd_fish(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    body = _ellipse(u, v, 0.2, 0.0, 0.75, 0.42)
    tail = np.maximum(-(u + 1.0), _halfplane(u, np.abs(v), (-0.45, 0.0), (0.45, 0.55)))
    return np.minimum(body, tail)


def _sd_star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    sector = 2.0 * math.pi / 5.0
    angle = np.abs(np.mod(np.arctan2(u, -v) + sector / 2.0, sector) - sector / 2.0)
    radius = np.hypot(u, v)
    x, y = radius * np.cos(angle), radius * np.sin(angle)  # folded into the half-point around the +x axis
    inner = (0.45 * math.cos(sector / 2.0), 0.45 * math.sin(sector / 2.0))
    distance = _segment(x, y, (1.0, 0.0), inner)
    side = _halfplane(x, y, (1.0, 0.0), (inner[1], 1.0 - inner[0]))
    return np.copysign(distance, side)


def _sd_box(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 0.0, 0.0, 0.8, 0.8, 0.12)


def _sd_ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(u, v) - 0.72) - 0.28


def _sd_cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, 0.0, 0.0, 1.0, 0.3, 0.06), _box(u, v, 0.0, 0.0, 0.3, 1.0, 0.06))


def _sd_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = np.abs(u)
    lobe = _circle(x, v, 0.45, -0.3, 0.5)
    # Lower half: bounded by the tangent from the tip (0, 0.95) to the lobe and by the lobe's radius to it.
    flank = _halfplane(x, v, (0.0, 0.95), (0.744, 0.668))
    cap = _halfplane(x, v, (0.45, -0.3), (0.668, -0.744))
    return np.minimum(lobe, np.maximum(np.maximum(flank, cap), -(v + 0.3)))


def _sd_diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = np.abs(u), np.abs(v)
    distance = _segment(x, y, (0.72, 0.0), (0.0, 1.0))
    return np.copysign(distance, _halfplane(x, y, (0.72, 0.0), (1.0, 0.72)))


def _sd_moon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(_circle(u, v, 0.0, 0.0, 1.0), -_circle(u, v, 0.5, -0.25, 0.85))


def _sd_stick(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A pendulum hanging from its pivot at the origin."""
    rod = _segment(u, v, (0.0, 0.0), (0.0, 1.0)) - 0.09
    bob = _circle(u, v, 0.0, 1.1, 0.3)
    pivot = _circle(u, v, 0.0, 0.0, 0.14)
    return np.minimum(np.minimum(rod, bob), pivot)


_SHAPES: dict[str, _Sdf] = {
    "ball": _sd_ball,
    "car": _sd_car,
    "bird": _sd_bird,
    "fish": _sd_fish,
    "star": _sd_star,
    "box": _sd_box,
    "ring": _sd_ring,
    "cross": _sd_cross,
    "heart": _sd_heart,
    "diamond": _sd_diamond,
    "moon": _sd_moon,
    "stick": _sd_stick,
}


@dataclass(frozen=True)
class _Geometry:
    """Measured extent of a shape in unit coordinates."""

    centroid: tuple[float, float]  # centre of area; its displacement defines the clip's direction
    radius: float  # the shape lies within this distance of the origin
    span: float  # larger side of the bounding box


@functools.cache
def _shape_geometry(name: str) -> _Geometry:
    axis = np.linspace(-1.8, 1.8, 361)
    u, v = np.meshgrid(axis, axis)
    inside = _SHAPES[name](u, v) < 0
    us, vs = u[inside], v[inside]
    span = max(us.max() - us.min(), vs.max() - vs.min())
    radius = float(np.hypot(us, vs).max()) + 0.02
    return _Geometry((float(us.mean()), float(vs.mean())), radius, float(span))


def _texture(kind: str, u: np.ndarray, v: np.ndarray, freq: float, angle: float) -> np.ndarray:
    """Pattern in [0, 1] fixed in object coordinates, so that rotation and scaling show in the pixels."""
    step = 2.0 * math.pi * freq
    cos, sin = math.cos(angle) * step, math.sin(angle) * step
    a = cos * u + sin * v
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(a)
    b = cos * v - sin * u
    if kind == "checker":
        return 0.5 + 0.5 * np.clip(3.0 * np.sin(a) * np.sin(b), -1.0, 1.0)
    return np.clip(1.5 * (np.cos(a) + np.cos(b)) - 1.0, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Backgrounds
# ---------------------------------------------------------------------------------------------------------


def _read_sklearn_image(filename: str) -> np.ndarray:
    """The file behind sklearn.datasets.load_sample_image, read without importing scikit-learn (about 1 s)."""
    from PIL import Image

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"sklearn/datasets/images/{filename}: scikit-learn is not installed; install it.")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sample image missing from the scikit-learn installation.")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _load_image(name: str) -> np.ndarray:
    """One bundled natural image as float RGB in [0, 1], centre-cropped to a square."""
    if name in _SKLEARN_IMAGES:
        image = _read_sklearn_image(_SKLEARN_IMAGES[name])
    else:
        import skimage.data

        image = getattr(skimage.data, name)()
    image = np.asarray(image, dtype=np.float64) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side, :3]


@functools.lru_cache(maxsize=4)
def _load_backgrounds_cached(size: int) -> dict[str, np.ndarray]:
    from skimage.transform import resize

    backgrounds = {}
    for name in BACKGROUNDS:
        image = resize(_load_image(name), (size, size), order=1, anti_aliasing=True)
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        image.flags.writeable = False  # shared by every caller through the cache
        backgrounds[name] = image
    return backgrounds


def load_backgrounds(size: int) -> dict[str, np.ndarray]:
    """Load the bundled natural images used as backgrounds, centre-cropped and resized to a square.

    Parameters
    ----------
    size : int
        Side of the square backgrounds in pixels (``StimulusConfig.background_size``).

    Returns
    -------
    dict of str to numpy.ndarray
        One read-only float32 array of shape (size, size, 3) in [0, 1] per name in ``BACKGROUNDS``. Results are
        cached per size; copy an array before modifying it.

    Raises
    ------
    TypeError
        If size is not an int.
    ValueError
        If size is smaller than 16.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"load_backgrounds: size must be an int; got {type(size).__name__} {size!r}.")
    if size < 16:
        raise ValueError(f"load_backgrounds: size must be >= 16 pixels; got {size}.")
    return _load_backgrounds_cached(int(size))


# ---------------------------------------------------------------------------------------------------------
# Trajectories (shared by planning and rendering)
# ---------------------------------------------------------------------------------------------------------


def _camera_track(camera: dict, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre, array of shape (n_frames, 2), and zoom, array of shape (n_frames,), at scene times tau."""
    fraction = tau / camera["duration"]
    start, end = np.asarray(camera["pan_start"], float), np.asarray(camera["pan_end"], float)
    centre = start + np.outer(fraction, end - start)
    zoom = camera["zoom_start"] * (camera["zoom_end"] / camera["zoom_start"]) ** fraction
    return centre, zoom


def _fold(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reflect positions into [low, high] (a bounce at each wall); also return +-1 for forward / reflected."""
    period = 2.0 * (high - low)
    phase = np.mod(x - low, period)
    forward = phase <= period / 2.0
    return low + np.where(forward, phase, period - phase), np.where(forward, 1.0, -1.0)


def _wave(kind: str, phase: np.ndarray) -> np.ndarray:
    if kind == "none":
        return np.zeros_like(phase)
    if kind == "zigzag":
        return (2.0 / math.pi) * np.arcsin(np.sin(phase))
    return np.sin(phase)


def _object_track(obj: dict, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Object pose at scene times tau.

    Returns centre (array of shape (n_frames, 2)), angle, scale (pixels per unit) and mirror (+-1), each an
    array of shape (n_frames,).
    """
    box = np.asarray(obj["box"], float)
    velocity = np.asarray(obj["velocity"], float)
    drift = np.asarray(obj["start"], float) + np.outer(tau, velocity)
    centre, reflected = _fold(drift, box[:2], box[2:])
    wave = _wave(obj["wave"], 2.0 * math.pi * obj["wave_freq"] * tau + obj["wave_phase"])
    centre = centre + obj["wave_amp"] * np.outer(wave, obj["wave_dir"])
    arc = obj["arc_speed"] * tau + obj["arc_phase"]
    centre = centre + obj["arc_radius"] * np.stack([np.cos(arc), np.sin(arc)], axis=1)
    swing = obj["swing_amp"] * np.sin(2.0 * math.pi * obj["swing_freq"] * tau + obj["swing_phase"])
    angle = obj["angle"] + obj["spin"] * tau + swing
    pulse = 1.0 + obj["pulse_amp"] * np.sin(2.0 * math.pi * obj["pulse_freq"] * tau + obj["pulse_phase"])
    scale = obj["size"] * np.exp(obj["loom_rate"] * tau) * pulse
    heading = reflected[:, 0] * (1.0 if velocity[0] >= 0 else -1.0)
    mirror = heading if obj["faces_motion"] else np.ones_like(tau)
    return centre, angle, scale, mirror


def _object_centroid(obj: dict, tau: np.ndarray) -> np.ndarray:
    """Pixel position of the shape's centre of area, array of shape (n_frames, 2)."""
    centre, angle, scale, mirror = _object_track(obj, tau)
    qx, qy = _shape_geometry(obj["shape"]).centroid
    qx = mirror * qx
    cos, sin = np.cos(angle), np.sin(angle)
    return centre + scale[:, None] * np.stack([cos * qx - sin * qy, sin * qx + cos * qy], axis=1)


# ---------------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------------


N_DIRECTION_BINS = 8  # 45-degree bins centred on 0 (rightwards), 45, 90 (downwards), ...


def direction_bin(degrees: float) -> int:
    """The 45-degree bin (0..7) of a motion direction in image degrees (0 = rightwards, 90 = downwards)."""
    return int(math.floor((degrees + 22.5) / 45.0)) % N_DIRECTION_BINS


def _scene_lengths(n_clips: int, config: StimulusConfig, rng: np.random.Generator) -> list[int]:
    lengths: list[int] = []
    while sum(lengths) < n_clips:
        lengths.append(int(rng.integers(config.scene_clips_min, config.scene_clips_max + 1)))
    lengths[-1] -= sum(lengths) - n_clips
    return lengths


def _balanced_sequence(n_items: int, n_draws: int, rng: np.random.Generator) -> list[int]:
    """Indices drawn in shuffled rounds: balanced counts, never the same index twice in a row."""
    drawn: list[int] = []
    while len(drawn) < n_draws:
        order = rng.permutation(n_items)
        if drawn and n_items > 1 and order[0] == drawn[-1]:
            order = np.roll(order, -1)
        drawn.extend(int(i) for i in order)
    return drawn[:n_draws]


def _camera_phrase(zoom_kind: str, pan: np.ndarray) -> str:
    parts = [] if zoom_kind == "none" else [f"zooming {zoom_kind}"]
    if np.any(pan != 0):
        degrees = math.degrees(math.atan2(pan[1], pan[0])) % 360.0
        parts.append(f"panning {_DIRECTION_WORDS[direction_bin(degrees)]}")
    return "camera " + " and ".join(parts) if parts else "static camera"


def _sample_camera(config: StimulusConfig, n_frames: int, rng: np.random.Generator) -> dict:
    """Pan and zoom of one scene, chosen so that the sampled window stays inside the background."""
    size = config.background_size
    half = np.array([config.width - 1, config.height - 1]) / 2.0
    longest = max(config.width, config.height)
    fit = (size - 1) / (longest - 1)  # largest zoom whose window fits the background
    duration = (n_frames - 1) / config.fps
    zoom_kind = ("none", "in", "out")[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
    if zoom_kind == "none":
        zoom_start = zoom_end = min(rng.uniform(0.5, 0.95) * size / longest, fit)
    else:
        wide = min(rng.uniform(0.7, 0.95) * size / longest, fit)
        close = wide / rng.uniform(1.25, 1.7)
        zoom_start, zoom_end = (wide, close) if zoom_kind == "in" else (close, wide)
    pan = np.zeros(2)
    if rng.random() < 0.7:
        heading = rng.uniform(0.0, 2.0 * math.pi)
        speed = rng.uniform(0.04, 0.12) * config.width  # output pixels per second
        pan = speed * duration * math.sqrt(zoom_start * zoom_end) * np.array([math.cos(heading), math.sin(heading)])
    # Camera centre c must satisfy half * z <= c <= size - 1 - half * z at both ends; c is linear and z convex
    # in time, so both constraints then hold throughout the scene.
    for _ in range(12):
        low = np.maximum(half * zoom_start, half * zoom_end - pan)
        high = np.minimum(size - 1 - half * zoom_start, size - 1 - half * zoom_end - pan)
        if np.all(low <= high):
            break
        pan = pan / 2.0
    else:
        pan = np.zeros(2)
        low, high = half * max(zoom_start, zoom_end), size - 1 - half * max(zoom_start, zoom_end)
    start = rng.uniform(low, high)
    return {
        "pan_start": [float(x) for x in start],
        "pan_end": [float(x) for x in start + pan],
        "zoom_start": float(zoom_start),
        "zoom_end": float(zoom_end),
        "duration": float(duration),
        "blur_sigma": 0.5 * math.sqrt(max(min(zoom_start, zoom_end) ** 2 - 1.0, 0.0)),
        "motion": _camera_phrase(zoom_kind, pan),
    }


def _drift_heading(kind: str, rng: np.random.Generator) -> float:
    if kind == "horizontal":
        return math.pi * int(rng.integers(2)) + rng.uniform(-0.15, 0.15)
    if kind == "diagonal":
        return math.pi / 4.0 + math.pi / 2.0 * int(rng.integers(4)) + rng.uniform(-0.15, 0.15)
    return rng.uniform(0.0, 2.0 * math.pi)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _signed(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return _uniform(rng, bounds) * (1.0 if rng.random() < 0.5 else -1.0)


def _speed_ranges(motion: _Motion, config: StimulusConfig, arc_radius: float) -> tuple[tuple, tuple]:
    """Drift speed (pixels/s) and arc speed (rad/s) ranges, raised where short clips need faster motion."""
    clip_span = (config.frames_per_clip - 1) / config.fps
    needed = 2.0 * _MIN_CLIP_TRAVEL * config.width  # pixels of travel per clip, with a margin
    speed = np.array(motion.speed) * config.width
    arc_speed = np.array(motion.arc_speed)
    if arc_radius > 0:  # a chord of the arc must reach `needed`
        arc_speed = np.maximum(arc_speed, 2.0 * math.asin(min(1.0, needed / (2.0 * arc_radius))) / clip_span)
    else:
        speed = np.maximum(speed, needed / clip_span)
    return tuple(speed), tuple(arc_speed)


def _sample_object(category: str, config: StimulusConfig, n_frames: int, rng: np.random.Generator) -> dict:
    """Draw one candidate trajectory of the scene's object (see ``_object_track`` for its use)."""
    motion, geometry = _MOTIONS[category], _shape_geometry(category)
    frame = np.array([config.width, config.height], dtype=float)
    size = _uniform(rng, motion.size) * config.width / geometry.span
    loom, pulse = _uniform(rng, motion.loom), _uniform(rng, motion.pulse)
    wave_amp = _uniform(rng, motion.wave_amp) * config.width
    arc_radius = _uniform(rng, motion.arc_radius) * config.width
    # Keep the drift far enough from the borders that waves and arcs leave the object mostly in view.
    reach = size * loom * (1.0 + pulse) * geometry.radius
    low = np.minimum(0.6 * reach + wave_amp + arc_radius, 0.4 * frame)
    high = frame - low
    speed, arc_speed = _speed_ranges(motion, config, arc_radius)
    heading = _drift_heading(motion.heading, rng)
    drift = _uniform(rng, speed) * np.array([math.cos(heading), math.sin(heading)])
    wave_dir = [0.0, 1.0] if motion.wave == "vertical" else [-math.sin(heading), math.cos(heading)]
    arc_phase, arc_speed = _uniform(rng, (0.0, 2.0 * math.pi)), _signed(rng, arc_speed)
    if arc_radius > 0:  # the crescent turns with the arc
        angle, spin = arc_phase, arc_speed
    else:
        angle = 0.0 if motion.upright else float(rng.uniform(0.0, 2.0 * math.pi))
        spin = _signed(rng, motion.spin)
    return {
        "shape": category,
        "size": size,
        "loom_rate": math.log(loom) * config.fps / (n_frames - 1),  # reaches `loom` at the last frame
        "pulse_amp": pulse,
        "pulse_freq": _uniform(rng, motion.pulse_freq),
        "pulse_phase": _uniform(rng, (0.0, 2.0 * math.pi)),
        "start": [float(x) for x in rng.uniform(low, high)],
        "velocity": [float(x) for x in drift],
        "box": [float(x) for x in (*low, *high)],
        "wave": motion.wave,
        "wave_amp": wave_amp,
        "wave_freq": _uniform(rng, motion.wave_freq),
        "wave_phase": _uniform(rng, (0.0, 2.0 * math.pi)),
        "wave_dir": wave_dir,
        "arc_radius": arc_radius,
        "arc_speed": arc_speed,
        "arc_phase": arc_phase,
        "angle": angle,
        "spin": spin,
        "swing_amp": _uniform(rng, motion.swing),
        "swing_freq": _uniform(rng, motion.swing_freq),
        "swing_phase": _uniform(rng, (0.0, 2.0 * math.pi)),
        "faces_motion": motion.faces_motion,
    }


def _object_fits(obj: dict, config: StimulusConfig, n_clips: int) -> bool:
    """Whether the object stays in view and travels far enough in every clip."""
    per_clip = config.frames_per_clip
    centroid = _object_centroid(obj, np.arange(n_clips * per_clip) / config.fps)
    in_view = np.all((centroid >= 0.0) & (centroid <= [config.width - 1.0, config.height - 1.0]))
    travel = np.linalg.norm(centroid[per_clip - 1 :: per_clip] - centroid[::per_clip], axis=1)
    return bool(in_view and np.all(travel >= _MIN_CLIP_TRAVEL * config.width))


def _plan_object(category: str, colour: str, config: StimulusConfig, n_clips: int, rng: np.random.Generator) -> dict:
    """Object of one scene: a trajectory that fits (drawn by rejection), its colour and its texture."""
    for _ in range(_PLAN_ATTEMPTS):
        obj = _sample_object(category, config, n_clips * config.frames_per_clip, rng)
        if _object_fits(obj, config, n_clips):
            break
    else:
        raise RuntimeError(
            f"plan_run could not fit a visible '{category}' motion into {n_clips} clips of "
            f"{config.frames_per_clip} frames at {config.width}x{config.height} pixels after {_PLAN_ATTEMPTS} "
            "attempts; use longer clips (clip_seconds) or larger frames."
        )
    obj["colour_rgb"] = list(dict(COLOURS)[colour])
    obj["texture"] = _TEXTURES[int(rng.integers(len(_TEXTURES)))]
    # Cycles per unit length; a period of at least 6 pixels keeps the texture free of aliasing on small frames.
    obj["texture_freq"] = min(_uniform(rng, (1.2, 2.2)), obj["size"] * (1.0 - obj["pulse_amp"]) / 6.0)
    obj["texture_angle"] = _uniform(rng, (0.0, math.pi))
    return obj


def _clip_labels(obj: dict, config: StimulusConfig, n_clips: int) -> list[tuple[float, int, float]]:
    """(direction_deg, direction_bin, speed) of each clip, from the first to the last frame of the clip."""
    per_clip = config.frames_per_clip
    centroid = _object_centroid(obj, np.arange(n_clips * per_clip) / config.fps)
    net = centroid[per_clip - 1 :: per_clip] - centroid[::per_clip]
    elapsed = (per_clip - 1) / config.fps
    labels = []
    for dx, dy in net:
        degrees = math.degrees(math.atan2(dy, dx)) % 360.0
        degrees = 0.0 if degrees >= 360.0 else degrees  # -1e-17 % 360 rounds to 360
        labels.append((degrees, direction_bin(degrees), math.hypot(dx, dy) / elapsed))
    return labels


def _plan_scene(
    scene: int,
    first_clip: int,
    n_clips: int,
    draws: tuple[str, str, str],
    config: StimulusConfig,
    rng: np.random.Generator,
) -> list[dict]:
    """Clip dicts of one scene; draws is (category, background, colour)."""
    category, background, colour = draws
    camera = _sample_camera(config, n_clips * config.frames_per_clip, rng)
    obj = _plan_object(category, colour, config, n_clips, rng)
    clips = []
    for k, (degrees, direction_bin, speed) in enumerate(_clip_labels(obj, config, n_clips)):
        article = "an" if colour[0] in "aeiou" else "a"
        caption = (
            f"{article} {colour} {category} {_MOTIONS[category].verb} {_DIRECTION_WORDS[direction_bin]} in front of "
            f"{_BACKGROUND_CAPTIONS[background]}, {camera['motion']}"
        )
        clips.append(
            {
                "clip": first_clip + k,
                "scene": scene,
                "scene_start": k == 0,
                "scene_clip": k,
                "scene_clips": n_clips,
                "category": category,
                "category_id": CATEGORIES.index(category),
                "background": background,
                "colour": colour,
                "texture": obj["texture"],
                "direction_deg": degrees,
                "direction_bin": direction_bin,
                "speed": speed,
                "camera_motion": camera["motion"],
                "caption": caption,
                "frame_size": [config.height, config.width],
                "fps": config.fps,
                "frames_per_clip": config.frames_per_clip,
                "background_size": config.background_size,
                "camera": copy.deepcopy(camera),
                "object": copy.deepcopy(obj),
            }
        )
    return clips


def swap_category(caption: str, category: str, other: str) -> str:
    """The caption of the same clip with another object category (and that category's motion verb).

    A hard negative for contrastive training (NegCLIP; Yuksekgonul et al. 2023, ICLR): "a red ball bouncing to the
    left in front of grass, ..." with ``other="star"`` becomes "a red star spinning to the left in front of grass,
    ...". Colour, direction, background and camera stay.

    Raises
    ------
    ValueError
        If either category is unknown, they are equal, or the caption does not name ``category`` with its verb.
    """
    for name, value in (("category", category), ("other", other)):
        if value not in _MOTIONS:
            raise ValueError(f"swap_category: {name} expected one of {list(CATEGORIES)}, got {value!r}.")
    if category == other:
        raise ValueError(f"swap_category: expected another category than the caption's, got {other!r} twice.")
    phrase = f" {category} {_MOTIONS[category].verb} "
    if phrase not in caption:
        raise ValueError(f"swap_category: expected the caption to contain {phrase.strip()!r}, got {caption!r}.")
    return caption.replace(phrase, f" {other} {_MOTIONS[other].verb} ", 1)


def plan_run(n_clips: int, config: StimulusConfig, rng: np.random.Generator) -> list[dict]:
    """Draw the scenes, objects, motions and labels of one run of procedural movie.

    Parameters
    ----------
    n_clips : int
        Number of clips (fMRI TRs) in the run, >= 1.
    config : StimulusConfig
        Frame size, timing and scene lengths.
    rng : numpy.random.Generator
        Source of all randomness; the same generator state gives the same plan.

    Returns
    -------
    list of dict
        One JSON-serialisable dict per clip with keys ``clip``, ``scene``, ``scene_start``, ``scene_clip``,
        ``scene_clips``, ``category``, ``category_id``, ``background``, ``colour``, ``texture``,
        ``direction_deg`` (direction of the object's net displacement from the clip's first to its last frame,
        degrees, 0 = rightwards, 90 = downwards), ``direction_bin`` (0..7, 45-degree bins centred on 0, 45, ...),
        ``speed`` (that displacement in pixels per second), ``camera_motion``, ``caption``, the config it was
        made for (``frame_size``, ``fps``, ``frames_per_clip``, ``background_size``) and the scene's render
        parameters ``camera`` and ``object`` (identical in every clip of a scene; see the module docstring).

    Raises
    ------
    TypeError
        If n_clips is not an int, config not a StimulusConfig or rng not a numpy Generator.
    ValueError
        If n_clips < 1.
    RuntimeError
        If no visible object motion fits the clips (clips of very few frames on tiny frames).
    """
    _check_plan_arguments(n_clips, config, rng)
    lengths = _scene_lengths(n_clips, config, rng)
    categories = _balanced_sequence(len(CATEGORIES), len(lengths), rng)
    backgrounds = _balanced_sequence(len(BACKGROUNDS), len(lengths), rng)
    plan: list[dict] = []
    colour = int(rng.integers(len(COLOURS)))
    for scene, length in enumerate(lengths):
        if scene > 0:  # a new colour at every cut, so that consecutive scenes never look alike
            colour = (colour + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS)
        draws = (CATEGORIES[categories[scene]], BACKGROUNDS[backgrounds[scene]], COLOURS[colour][0])
        plan.extend(_plan_scene(scene, len(plan), length, draws, config, rng))
    return plan


def _check_plan_arguments(n_clips: int, config: StimulusConfig, rng: np.random.Generator) -> None:
    if isinstance(n_clips, bool) or not isinstance(n_clips, int | np.integer):
        raise TypeError(f"plan_run: n_clips must be an int; got {type(n_clips).__name__} {n_clips!r}.")
    if n_clips < 1:
        raise ValueError(f"plan_run: n_clips must be >= 1; got {n_clips}.")
    if not isinstance(config, StimulusConfig):
        raise TypeError(f"plan_run: config must be a StimulusConfig; got {type(config).__name__}.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"plan_run: rng must be a numpy.random.Generator; got {type(rng).__name__}. "
            "Pass numpy.random.default_rng(seed)."
        )


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------

_PLAN_KEYS = (
    "clip",
    "scene",
    "scene_start",
    "background",
    "camera",
    "object",
    "frame_size",
    "fps",
    "frames_per_clip",
    "background_size",
)


@dataclass
class _Scene:
    """Render parameters of one scene of a plan."""

    first_frame: int
    n_frames: int
    background: str
    camera: dict
    obj: dict
    sdf: _Sdf
    geometry: _Geometry
    colour: np.ndarray  # float32 RGB in [0, 1]


def _check_clip(index: int, clip: object, config: StimulusConfig) -> None:
    if not isinstance(clip, dict):
        raise TypeError(f"plan[{index}] must be a dict made by plan_run; got {type(clip).__name__}.")
    missing = [key for key in _PLAN_KEYS if key not in clip]
    if missing:
        raise ValueError(f"plan[{index}] lacks the keys {missing}; pass a plan made by plan_run.")
    if clip["clip"] != index:
        raise ValueError(f"plan[{index}]['clip'] is {clip['clip']!r}; expected {index} (clips in run order).")
    expected = ([config.height, config.width], config.fps, config.frames_per_clip, config.background_size)
    got = (list(clip["frame_size"]), clip["fps"], clip["frames_per_clip"], clip["background_size"])
    if got != expected:
        raise ValueError(
            f"plan[{index}] was made for (frame_size, fps, frames_per_clip, background_size) = {got}; this "
            f"config gives {expected}. Render a plan with the StimulusConfig passed to plan_run."
        )
    if clip["background"] not in _BACKGROUND_CAPTIONS or clip["object"].get("shape") not in _SHAPES:
        raise ValueError(
            f"plan[{index}] names background {clip['background']!r} and shape {clip['object'].get('shape')!r}; "
            f"expected one of BACKGROUNDS and one of CATEGORIES."
        )


def _scene_spans(plan: list[dict]) -> list[tuple[int, int]]:
    """[start, stop) clip ranges of the scenes, after checking that each scene is contiguous and consistent."""
    spans: list[tuple[int, int]] = []
    for index, clip in enumerate(plan):
        new_scene = index == 0 or clip["scene"] != plan[index - 1]["scene"]
        if clip["scene"] != len(spans) - 1 + new_scene or bool(clip["scene_start"]) != new_scene:
            raise ValueError(
                f"plan[{index}] has scene={clip['scene']!r}, scene_start={clip['scene_start']!r}; expected "
                f"scene={len(spans) - 1 + new_scene}, scene_start={new_scene} (scenes numbered 0, 1, ... in order)."
            )
        if new_scene:
            spans.append((index, index + 1))
            continue
        spans[-1] = (spans[-1][0], index + 1)
        first = plan[spans[-1][0]]
        for key in ("background", "camera", "object"):
            if clip[key] != first[key]:
                raise ValueError(
                    f"plan[{index}]['{key}'] differs from that of plan[{spans[-1][0]}], the first clip of its "
                    f"scene; a scene has one {key}. Edit every clip of the scene together."
                )
    return spans


def _grid(n_out: int, n_full: int) -> np.ndarray:
    """Centres of n_out pixels spanning a frame of n_full pixels, in full-frame pixel coordinates."""
    return (np.arange(n_out) + 0.5) * (n_full / n_out) - 0.5


def _lerp_index(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.clip(coords, 0.0, size - 1.0)
    index = np.minimum(coords.astype(np.intp), size - 2)
    return index, (coords - index).astype(np.float32)


def _bilinear(image: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Bilinear samples of image (size, size, 3) on the grid by x bx (separable: the camera never rotates)."""
    x0, wx = _lerp_index(bx, image.shape[1])
    y0, wy = _lerp_index(by, image.shape[0])
    columns = image[:, x0[0] : x0[-1] + 2]  # bx increases, so this is every column the grid touches
    x0 = x0 - x0[0]
    top, bottom = columns[y0], columns[y0 + 1]
    rows = top + wy[:, None, None] * (bottom - top)
    left, right = rows[:, x0], rows[:, x0 + 1]
    return left + wx[None, :, None] * (right - left)


class RunRenderer:
    """Renders the frames and the exact optical flow of a planned run.

    Parameters
    ----------
    plan : list of dict
        Output of :func:`plan_run` (also after a JSON round trip).
    config : StimulusConfig
        The config the plan was made with.

    Attributes
    ----------
    n_frames : int
        ``len(plan) * config.frames_per_clip``.

    Raises
    ------
    TypeError
        If config is not a StimulusConfig or the plan is not a list of dicts.
    ValueError
        If the plan is empty, was made for another config, names an unknown background or shape, its scenes
        are not contiguous and consistent, or a camera window leaves its background.
    """

    def __init__(self, plan: list[dict], config: StimulusConfig) -> None:
        if not isinstance(config, StimulusConfig):
            raise TypeError(f"RunRenderer: config must be a StimulusConfig; got {type(config).__name__}.")
        if not isinstance(plan, list | tuple):
            raise TypeError(f"RunRenderer: plan must be a list of clip dicts from plan_run; got {type(plan).__name__}.")
        if len(plan) == 0:
            raise ValueError(
                "RunRenderer: plan must be a non-empty list of clip dicts from plan_run; got an empty list."
            )
        for index, clip in enumerate(plan):
            _check_clip(index, clip, config)
        self._config = config
        self.n_frames = len(plan) * config.frames_per_clip
        self._backgrounds = load_backgrounds(config.background_size)
        self._blurred: dict[tuple[str, float], np.ndarray] = {}
        self._scenes = [self._make_scene(plan, start, stop) for start, stop in _scene_spans(list(plan))]
        self._xs = np.arange(config.width, dtype=np.float32)
        self._ys = np.arange(config.height, dtype=np.float32)
        self._tabulate_poses()

    def _make_scene(self, plan: list[dict], start: int, stop: int) -> _Scene:
        clip, per_clip = plan[start], self._config.frames_per_clip
        obj, camera = copy.deepcopy(clip["object"]), copy.deepcopy(clip["camera"])  # immune to later plan edits
        self._check_camera(start, camera, (stop - start) * per_clip)
        return _Scene(
            first_frame=start * per_clip,
            n_frames=(stop - start) * per_clip,
            background=clip["background"],
            camera=camera,
            obj=obj,
            sdf=_SHAPES[obj["shape"]],
            geometry=_shape_geometry(obj["shape"]),
            colour=np.asarray(obj["colour_rgb"], dtype=np.float32),
        )

    def _check_camera(self, index: int, camera: dict, n_frames: int) -> None:
        """The sampled window must stay inside the background, or clamping would break the exact flow."""
        size, config = self._config.background_size, self._config
        half = np.array([config.width - 1, config.height - 1]) / 2.0
        # Pan is linear and zoom convex in time, so the window is inside throughout iff it is at both ends.
        centre, zoom = _camera_track(camera, np.array([0.0, (n_frames - 1) / config.fps]))
        low, high = centre - zoom[:, None] * half, centre + zoom[:, None] * half
        if low.min() < -1e-6 or high.max() > size - 1 + 1e-6:
            raise ValueError(
                f"plan[{index}]['camera'] samples background pixels {low.min():.2f} to {high.max():.2f}; expected "
                f"within [0, {size - 1}] (background_size {size}). Keep the window pan +- zoom * (frame side - 1) / 2 "
                "inside the background at the scene's first and last frames."
            )

    def _tabulate_poses(self) -> None:
        """Camera and object pose of every frame, and where the scenes end."""
        n = self.n_frames
        self._scene_of = np.empty(n, dtype=np.intp)
        self._cam_centre, self._cam_zoom = np.empty((n, 2)), np.empty(n)
        self._obj_centre, self._obj_angle = np.empty((n, 2)), np.empty(n)
        self._obj_scale, self._obj_mirror = np.empty(n), np.empty(n)
        self._cut = np.zeros(n, dtype=bool)
        for index, scene in enumerate(self._scenes):
            frames = slice(scene.first_frame, scene.first_frame + scene.n_frames)
            tau = np.arange(scene.n_frames) / self._config.fps
            self._scene_of[frames] = index
            self._cam_centre[frames], self._cam_zoom[frames] = _camera_track(scene.camera, tau)
            pose = _object_track(scene.obj, tau)
            self._obj_centre[frames], self._obj_angle[frames], self._obj_scale[frames] = pose[:3]
            self._obj_mirror[frames] = pose[3]
            self._cut[frames.stop - 1] = True

    # -- checks ---------------------------------------------------------------------------------------------

    @staticmethod
    def _as_index(value: int, where: str) -> int:
        try:
            return operator.index(value)
        except TypeError:
            raise TypeError(
                f"RunRenderer.{where}: frame index must be an int; got {type(value).__name__} {value!r}."
            ) from None

    def _check_frame(self, t: int, where: str) -> int:
        t = self._as_index(t, where)
        if not 0 <= t < self.n_frames:
            raise IndexError(
                f"RunRenderer.{where}: frame index {t} is out of range; expected 0 <= t < n_frames = {self.n_frames}."
            )
        return t

    def _check_grid(self, height: int | None, width: int | None, where: str) -> tuple[int, int]:
        size = {
            "height": self._config.height if height is None else height,
            "width": self._config.width if width is None else width,
        }
        for name, value in size.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"RunRenderer.{where}: {name} must be an int or None; got {type(value).__name__}.")
            if value < 1:
                raise ValueError(f"RunRenderer.{where}: {name} must be >= 1 pixel; got {value}.")
        return int(size["height"]), int(size["width"])

    # -- public API -----------------------------------------------------------------------------------------

    def is_cut(self, t: int) -> bool:
        """Whether the flow from frame t is undefined: frame t + 1 starts a new scene, or t is the last frame.

        Raises
        ------
        IndexError
            If t is not in [0, n_frames).
        """
        return bool(self._cut[self._check_frame(t, "is_cut")])

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Render frames start, ..., stop - 1.

        Parameters
        ----------
        start, stop : int
            Frame range, 0 <= start < stop <= n_frames.

        Returns
        -------
        numpy.ndarray
            uint8 array of shape (stop - start, height, width, 3).

        Raises
        ------
        IndexError
            If the range leaves [0, n_frames].
        ValueError
            If stop <= start.
        """
        start, stop = self._as_index(start, "frames"), self._as_index(stop, "frames")
        if not (0 <= start <= self.n_frames and 0 <= stop <= self.n_frames):
            raise IndexError(
                f"RunRenderer.frames: range [{start}, {stop}) is out of range; expected 0 <= start < stop <= "
                f"n_frames = {self.n_frames}."
            )
        if stop <= start:
            raise ValueError(f"RunRenderer.frames: expected start < stop; got start={start}, stop={stop}.")
        out = np.empty((stop - start, self._config.height, self._config.width, 3), dtype=np.uint8)
        for i, t in enumerate(range(start, stop)):
            image = self._render(t)
            image *= 255.0
            image += 0.5  # round; values stay in [0, 1] before scaling, so no clipping is needed
            out[i] = image
        return out

    def flow(self, t: int, height: int | None = None, width: int | None = None, step: int = 1) -> np.ndarray:
        """Exact forward optical flow from frame t to frame t + step.

        For each pixel centre of the requested grid, the flow is that of the layer visible there in frame t
        (the object where its alpha > 0.5, else the background), carried to where that point of the layer is in
        frame t + step (occlusion by the object in frame t + step is not modelled).

        Parameters
        ----------
        t : int
            Frame index, 0 <= t < n_frames.
        height, width : int, optional
            Size of the grid the flow is evaluated on (at its pixel centres) and expressed in; default the
            frame size.
        step : int
            Frame gap, >= 1: 1 for consecutive movie frames, ``fps // clip_fps`` for consecutive frames of clips
            subsampled to ``clip_fps``.

        Returns
        -------
        numpy.ndarray
            float32 array of shape (height, width, 2); [..., 0] = dx (rightwards), [..., 1] = dy (downwards), in
            pixels of the requested grid. All NaN when is_cut(u) for some u in [t, t + step), i.e. when frames t
            and t + step are not of one scene (or t + step is past the last frame).

        Raises
        ------
        IndexError
            If t is out of range.
        TypeError, ValueError
            If height, width or step is not a positive int.
        """
        t = self._check_frame(t, "flow")
        height, width = self._check_grid(height, width, "flow")
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"RunRenderer.flow: step must be an int; got {type(step).__name__} {step!r}.")
        if step < 1:
            raise ValueError(f"RunRenderer.flow: step must be >= 1 frame; got {step}.")
        step = int(step)
        if self._cut[t : t + step].any():  # the last frame is a cut, so this also covers t + step >= n_frames
            return np.full((height, width, 2), np.nan, dtype=np.float32)
        xs, ys = _grid(width, self._config.width), _grid(height, self._config.height)
        result = np.empty((height, width, 2))
        result[..., 0], result[..., 1] = self._camera_flow(t, t + step, xs, ys)
        patch = self._object_patch(t, xs, ys, pad=0.0)
        if patch is not None:
            (rows, cols), u, v, distance = patch
            inside = distance < 0.0  # alpha > 0.5
            new_x, new_y = self._object_to_pixels(t + step, u, v)
            region = result[rows, cols]
            region[..., 0] = np.where(inside, new_x - xs[cols][None, :], region[..., 0])
            region[..., 1] = np.where(inside, new_y - ys[rows][:, None], region[..., 1])
        result[..., 0] *= width / self._config.width
        result[..., 1] *= height / self._config.height
        return result.astype(np.float32)

    def object_alpha(self, t: int, height: int | None = None, width: int | None = None) -> np.ndarray:
        """Coverage of the object in frame t, with a one-pixel antialiased edge on the requested grid.

        Parameters
        ----------
        t : int
            Frame index, 0 <= t < n_frames.
        height, width : int, optional
            Grid to evaluate on (at its pixel centres); default the frame size, where it equals the alpha used
            to composite the frame.

        Returns
        -------
        numpy.ndarray
            float32 array of shape (height, width) in [0, 1].

        Raises
        ------
        IndexError
            If t is out of range.
        TypeError, ValueError
            If height or width is not a positive int.
        """
        t = self._check_frame(t, "object_alpha")
        height, width = self._check_grid(height, width, "object_alpha")
        alpha = np.zeros((height, width), dtype=np.float32)
        resolution = math.sqrt(width / self._config.width * height / self._config.height)
        xs, ys = _grid(width, self._config.width), _grid(height, self._config.height)
        patch = self._object_patch(t, xs, ys, pad=0.5 / resolution + 1.0)
        if patch is not None:
            (rows, cols), _, _, distance = patch
            alpha[rows, cols] = np.clip(0.5 - distance * resolution, 0.0, 1.0)
        return alpha

    # -- internals ------------------------------------------------------------------------------------------

    def _render(self, t: int) -> np.ndarray:
        """Frame t as float32 array of shape (height, width, 3) in [0, 1]."""
        scene = self._scenes[self._scene_of[t]]
        image = self._background_view(t)
        patch = self._object_patch(t, self._xs, self._ys, pad=1.0)
        if patch is not None:
            (rows, cols), u, v, distance = patch
            alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]
            obj = scene.obj
            shade = _texture(obj["texture"], u, v, obj["texture_freq"], obj["texture_angle"])
            colour = (0.3 + 0.7 * shade)[..., None] * scene.colour
            region = image[rows, cols]
            region += alpha * (colour - region)
        return image

    def _background_view(self, t: int) -> np.ndarray:
        scene = self._scenes[self._scene_of[t]]
        image = self._blurred_background(scene)
        (cx, cy), zoom = self._cam_centre[t], self._cam_zoom[t]
        bx = cx + zoom * (np.arange(self._config.width) - (self._config.width - 1) / 2.0)
        by = cy + zoom * (np.arange(self._config.height) - (self._config.height - 1) / 2.0)
        return _bilinear(image, bx, by)

    def _blurred_background(self, scene: _Scene) -> np.ndarray:
        key = (scene.background, float(scene.camera["blur_sigma"]))
        if key not in self._blurred:
            if len(self._blurred) >= 8:  # scenes are rendered in order; keep memory bounded on long runs
                del self._blurred[next(iter(self._blurred))]
            image, sigma = self._backgrounds[key[0]], key[1]
            self._blurred[key] = ndimage.gaussian_filter(image, (sigma, sigma, 0.0)) if sigma > 0 else image
        return self._blurred[key]

    def _camera_flow(self, t: int, target: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Background flow from frame t to frame target, p' = A_target^{-1}(A_t(p)) - p; separable, so returned as
        (1, width), (height, 1)."""
        (cx, cy), zoom = self._cam_centre[t], self._cam_zoom[t]
        (nx, ny), next_zoom = self._cam_centre[target], self._cam_zoom[target]
        px, py = (self._config.width - 1) / 2.0, (self._config.height - 1) / 2.0
        fx = px + (cx - nx + zoom * (xs - px)) / next_zoom - xs
        fy = py + (cy - ny + zoom * (ys - py)) / next_zoom - ys
        return fx[None, :], fy[:, None]

    def _object_patch(
        self, t: int, xs: np.ndarray, ys: np.ndarray, pad: float
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
        """Unit coordinates (u, v) and signed distance in pixels of the grid points near the object in frame t.

        Returns ((rows, cols), u, v, distance) with arrays of shape (n_rows, n_cols), or None when no grid point
        lies within pad pixels of the object's bounding circle.
        """
        scene = self._scenes[self._scene_of[t]]
        cx, cy = float(self._obj_centre[t, 0]), float(self._obj_centre[t, 1])
        scale, angle = float(self._obj_scale[t]), float(self._obj_angle[t])
        reach = scale * scene.geometry.radius + pad
        c0, c1 = np.searchsorted(xs, (cx - reach, cx + reach))
        r0, r1 = np.searchsorted(ys, (cy - reach, cy + reach))
        if c0 >= c1 or r0 >= r1:
            return None
        dx, dy = xs[c0:c1] - cx, ys[r0:r1] - cy
        cos, sin = math.cos(angle), math.sin(angle)
        u = (dx[None, :] * cos + dy[:, None] * sin) * (float(self._obj_mirror[t]) / scale)
        v = (dy[:, None] * cos - dx[None, :] * sin) * (1.0 / scale)
        return (slice(r0, r1), slice(c0, c1)), u, v, scene.sdf(u, v) * scale

    def _object_to_pixels(self, t: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel position in frame t of the object points with unit coordinates (u, v)."""
        cx, cy = self._obj_centre[t]
        scale, angle = self._obj_scale[t], self._obj_angle[t]
        x = self._obj_mirror[t] * u
        cos, sin = math.cos(angle), math.sin(angle)
        return cx + scale * (cos * x - sin * v), cy + scale * (sin * x + cos * v)
