"""The demo-tier optical flow: torchvision ``raft_small`` trained on the simulator's exact flow (DESIGN.md "Two tiers").

RAFT is a teacher for the clips the decoders see: consecutive *clip* frames (4 fps, 64 x 64 by default), i.e. movie
frames ``step = movie fps / clip fps`` apart (4 at 16 fps), seen at the clip size. Training pairs are movie
frames (t, t + g) of the training segments with gaps g = 1 … 2 · step (so the motions it learns cover those it
is used on, a sub-pixel shift to twice a clip step), decoded once from ``stimuli/{run}.mp4`` at the movie's own
size, with the simulator's exact forward flow from t to t + g as the target; pairs across a scene cut never enter.
Half of the training pairs are degraded to the clip size and back (the detail a 64 x 64 clip frame has lost).
Frames smaller than RAFT's minimum input are resized up by :class:`~pipelines.features.backbones.FlowEstimator`'s
rule, and the target is the exact flow evaluated on that larger grid, so no flow is interpolated. The loss is
RAFT's sequence loss; checkpoints are selected on the end-point error (EPE) of a fixed seeded subset of
validation-segment pairs, measured as the decoders use RAFT (consecutive clip frames at the clip size, through the
``FlowEstimator`` that ``load_backbone("raft", "demo", ...)`` returns). Evaluation uses the test runs only, in the
same geometry, and compares with TV-L1 (scikit-image) and zero flow on the same pairs.

Deviation: the first version trained and scored consecutive 16-fps movie frames, whose motion (0.39 px on
average) is below what RAFT's 1/8-resolution correlation resolves after H.264 coding; it lost to TV-L1 (EPE 0.39
against 0.15) and that regime is not the one any decoder uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray
from skimage.registration import optical_flow_tvl1

from pipelines.data.twin import groundtruth
from pipelines.data.video import probe_video, read_frames
from pipelines.evaluation.metrics import end_point_error
from pipelines.features import demo_tier
from pipelines.features.backbones import FlowEstimator, load_backbone, raft_size, to_tensor
from pipelines.training.backbones.data import BackboneData
from pipelines.training.loop import LoopConfig, checkpoint_step, train

TRAIN_FLOW_UPDATES = 4  # RAFT iterations per training step (at most the inference count); see train_raft
GAMMA = 0.8  # sequence-loss weight decay: iteration i of N weighs GAMMA ** (N - 1 - i), as in RAFT
N_VAL_PAIRS = 48  # validation pairs drawn once (seed VAL_SEED) from the validation segment
VAL_SEED = 0  # fixed, so validation scores of runs with different loop seeds are comparable
PAIR_MEMORY_BYTES = 512 * 2**20  # default budget of the pre-decoded training pairs (frames + float16 flow)
EVAL_BATCH = 16  # pairs per RAFT forward pass in validation and evaluation
BRIGHTNESS, CONTRAST = 0.1, 0.2  # photometric augmentation: offset in [-0.1, 0.1], gain in [0.8, 1.2]
DEGRADE_PROBABILITY = 0.5  # training pairs resized to the clip size and back, as clip frames reach RAFT
MAX_SHIFT = 8  # relative crops: frame t + g cropped up to this many pixels away (training grid: RAFT's + 2 x 8)


@dataclass
class FlowPairs:
    """Movie frames t and t + step with the exact forward flow between them."""

    first: np.ndarray  # array of shape (n_pairs, height, width, 3), uint8: frame t
    second: np.ndarray  # array of shape (n_pairs, height, width, 3), uint8: frame t + step
    flow: np.ndarray  # array of shape (n_pairs, grid_height, grid_width, 2): dx, dy in pixels of that grid
    run: np.ndarray  # array of shape (n_pairs,), str
    frame: np.ndarray  # array of shape (n_pairs,), int: t
    step: np.ndarray  # array of shape (n_pairs,), int: the frame gap

    def __len__(self) -> int:
        return len(self.frame)


# --- data ---------------------------------------------------------------------------------------------------------


def check_simulated(root: str | Path) -> Path:
    """The subject folder, if it has the simulator's ground truth (the exact flow the demo RAFT needs)."""
    root = Path(root)
    if not groundtruth.is_simulated(root):
        raise FileNotFoundError(
            f"{root / 'groundtruth' / 'twin.json'} does not exist; expected a simulated subject, because the demo "
            f"RAFT trains and is scored on the simulator's exact flow. Got {root}, which has no ground truth: "
            "simulate one (python -m pipelines simulate) or use the full tier's published RAFT weights."
        )
    return root


def split_runs(data: BackboneData, split: str) -> list[str]:
    """Names of the stimulus runs of one split, sorted (e.g. ["seg1", "seg2"])."""
    runs = sorted({str(r) for r in data.split(split).run})
    if not runs:
        raise ValueError(f"The {split!r} split of {data.root} has no runs; expected at least one to draw flow pairs.")
    return runs


def movie_frames(root: Path, run: str) -> int:
    """Number of frames of ``root/stimuli/{run}.mp4``."""
    return probe_video(root / "stimuli" / f"{run}.mp4").n_frames


def clip_geometry(data: BackboneData, run: str) -> tuple[int, tuple[int, int]]:
    """How the decoders see the movie: (movie frames between consecutive clip frames, clip frame (height, width)).

    Raises
    ------
    ValueError
        If the movie's frame rate is not a whole multiple of the clip frame rate.
    """
    movie_fps, clip_fps = probe_video(data.root / "stimuli" / f"{run}.mp4").fps, float(data.dataset.fps)
    step = round(movie_fps / clip_fps)
    if step < 1 or abs(movie_fps / clip_fps - step) > 1e-6:
        raise ValueError(
            f"{data.root / 'stimuli' / f'{run}.mp4'}: expected a frame rate that is a whole multiple of the clips' "
            f"{clip_fps:g} fps, got {movie_fps:g} fps."
        )
    return step, tuple(int(n) for n in data.frames("train").shape[2:4])


def collect_pairs(
    root: Path,
    candidates: list[tuple[str, int, int]],
    n_max: int | None = None,
    grid: tuple[int, int] | None = None,
    flow_dtype: type = np.float32,
    size: tuple[int, int] | None = None,
) -> FlowPairs:
    """Decode the candidate pairs (run, t, step) whose flow is defined, with their exact flow.

    Candidates are tried in order until ``n_max`` are kept; one across a scene cut or past the last frame (flow
    all NaN) is skipped. Each run's movie is decoded once.

    Parameters
    ----------
    root : Path
        A simulated subject.
    candidates : list of (run, t, step)
        Frames t and t + step of ``stimuli/{run}.mp4``.
    n_max : int, optional
        Stop after this many pairs (default: all defined candidates).
    grid : (height, width), optional
        Grid the flow is evaluated on and expressed in (default: ``size``, else the movie's size).
    flow_dtype : numpy dtype
        Storage type of the flow (float16 halves the memory of training pairs; its error is < 0.01 px below
        16 px of motion).
    size : (height, width), optional
        Frames resized and centre-cropped to this size as the readers do (default: the movie's size).

    Returns
    -------
    FlowPairs
        In the order of the candidates; ``flow`` of shape (n_pairs, grid_height, grid_width, 2).
    """
    n_max = len(candidates) if n_max is None else min(n_max, len(candidates))
    grid = grid or size or (None, None)
    flow, found = None, []  # flow is filled in place: stacking would double the peak memory of training pairs
    for run, t, step in candidates:
        if len(found) == n_max:
            break
        exact = groundtruth.exact_flow(root, run, int(t), *grid, step=int(step))
        if not np.isnan(exact).any():
            flow = np.empty((n_max, *exact.shape), flow_dtype) if flow is None else flow
            flow[len(found)] = exact
            found.append((run, int(t), int(step)))
    if flow is None:
        raise ValueError(
            f"None of the {len(candidates)} candidate frame pairs of {root} has a defined flow (all cross a scene "
            "cut); expected at least one. Draw more candidates."
        )
    runs = np.array([r for r, _, _ in found])
    frames, steps = (np.array([pair[k] for pair in found]) for k in (1, 2))
    first = second = None
    for run in dict.fromkeys(runs.tolist()):  # each movie decoded once, in the order runs first appear
        where = np.flatnonzero(runs == run)
        indices = np.concatenate([frames[where], frames[where] + steps[where]])
        decoded = read_frames(root / "stimuli" / f"{run}.mp4", indices, size=size)
        if first is None:
            first, second = (np.empty((len(found), *decoded.shape[1:]), np.uint8) for _ in range(2))
        first[where], second[where] = decoded[: len(where)], decoded[len(where) :]
    return FlowPairs(first, second, flow[: len(found)], runs, frames, steps)


def random_pairs(
    root: Path, runs: list[str], n_pairs: int, seed: int, step: int = 1, size: tuple[int, int] | None = None
) -> FlowPairs:
    """``n_pairs`` pairs (t, t + step) drawn without replacement from every t of ``runs``, none across a cut.

    Frames are resized to ``size`` (default: the movie's) and the flow is evaluated on that grid.

    Raises
    ------
    ValueError
        If the runs have fewer than ``n_pairs`` pairs with a defined flow.
    """
    candidates = [(run, t, step) for run in runs for t in range(movie_frames(root, run) - step)]
    order = np.random.default_rng(seed).permutation(len(candidates))
    pairs = collect_pairs(root, [candidates[i] for i in order], n_max=n_pairs, size=size)
    if len(pairs) < n_pairs:
        raise ValueError(
            f"n_pairs: expected at most {len(pairs)} (the pairs of {runs} {step} frame(s) apart with a defined "
            f"flow), got {n_pairs}."
        )
    return pairs


def training_pairs(
    root: Path, runs: list[str], max_pairs_per_run: int | None, max_step: int = 1, margin: int = 0
) -> FlowPairs:
    """Evenly spaced pairs of every training run, decoded at the movie's size, flow on RAFT's input grid.

    The gaps cycle through 1 … ``max_step`` along each run. ``max_pairs_per_run`` None: as many as fit in
    PAIR_MEMORY_BYTES over all runs (at most every frame). ``margin``: the grid is RAFT's input size plus
    ``2 * margin`` on each axis, so that relative crops of ``margin`` pixels still leave RAFT's input size.
    """
    n_frames = {run: movie_frames(root, run) for run in runs}
    info = probe_video(root / "stimuli" / f"{runs[0]}.mp4")
    grid = (raft_size(info.height) + 2 * margin, raft_size(info.width) + 2 * margin)
    if max_pairs_per_run is None:
        pair_bytes = 2 * info.height * info.width * 3 + grid[0] * grid[1] * 2 * 2
        max_pairs_per_run = max(1, PAIR_MEMORY_BYTES // pair_bytes // len(runs))
    candidates = []
    for run in runs:
        n_keep = min(n_frames[run] - 1, max_pairs_per_run)
        times = np.unique(np.linspace(0, n_frames[run] - 2, n_keep).round()).astype(int)
        candidates += [(run, int(t), 1 + i % max_step) for i, t in enumerate(times)]
    return collect_pairs(root, candidates, grid=grid, flow_dtype=np.float16)


def pair_batches(
    pairs: FlowPairs,
    batch_size: int,
    device: str | torch.device = "cpu",
    augment: bool = True,
    degrade_size: tuple[int, int] | None = None,
    max_shift: int = 0,
) -> Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """rng → (first, second, flow) for RAFT: frames (batch_size, 3, h, w) in [-1, 1], flow (batch_size, 2, h, w).

    Frames are resized to the flow's grid (bilinear, as FlowEstimator does). Augmentation keeps the target exact:
    horizontal / vertical flips negate dx / dy, one brightness and contrast change applies to both frames, and
    with ``degrade_size`` a pair is, with probability DEGRADE_PROBABILITY, resized down to that size (antialiased)
    and back up, as a clip frame reaches RAFT. Last, with ``max_shift`` > 0, a relative crop: frame t is cropped
    at (s, s) and frame t + g at (s + dx, s + dy), s = max_shift, integer dx, dy uniform in [-max_shift,
    max_shift], both to the grid less 2 · max_shift (rounded down to a multiple of 8); a point at p in the first
    crop moves to p + flow - (dx, dy) in the second, so the target stays exact while the motions it spans grow
    from sub-pixel drifts to several pixels, which is what gets RAFT's correlation features learning from scratch.
    """
    grid = pairs.flow.shape[1:3]
    max_shift = max_shift if augment else 0
    crop = grid if max_shift == 0 else tuple((n - 2 * max_shift) // 8 * 8 for n in grid)
    if min(crop) < 8:
        raise ValueError(f"max_shift: expected at most {(min(grid) - 8) // 2} for a {grid} grid, got {max_shift}.")

    def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def sample(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = rng.integers(0, len(pairs), batch_size)
        a, b = (F.interpolate(to_tensor(x[index], device), size=grid, mode="bilinear", align_corners=False)
                for x in (pairs.first, pairs.second))  # fmt: skip
        flow = torch.from_numpy(pairs.flow[index].astype(np.float32)).to(device).permute(0, 3, 1, 2)
        if augment:
            flip_x, flip_y = (torch.from_numpy(rng.random(batch_size) < 0.5).to(device) for _ in range(2))
            a, b, flow = (torch.where(flip_x[:, None, None, None], x.flip(-1), x) for x in (a, b, flow))
            a, b, flow = (torch.where(flip_y[:, None, None, None], x.flip(-2), x) for x in (a, b, flow))
            sign = torch.stack([1 - 2 * flip_x.float(), 1 - 2 * flip_y.float()], dim=1)[:, :, None, None]
            flow = flow * sign
            gain = torch.from_numpy(rng.uniform(1 - CONTRAST, 1 + CONTRAST, (batch_size, 1, 1, 1))).float()
            offset = torch.from_numpy(rng.uniform(-BRIGHTNESS, BRIGHTNESS, (batch_size, 1, 1, 1))).float()
            gain, offset = gain.to(device), offset.to(device)
            a, b = (((x - 0.5) * gain + 0.5 + offset).clamp(0, 1) for x in (a, b))
            if degrade_size is not None:
                degrade = torch.from_numpy(rng.random(batch_size) < DEGRADE_PROBABILITY).to(device)
                a, b = (torch.where(degrade[:, None, None, None], resize(resize(x, degrade_size), grid), x)
                        for x in (a, b))  # fmt: skip
        if max_shift:
            shift = rng.integers(-max_shift, max_shift + 1, (batch_size, 2))
            (h, w), s = crop, max_shift
            a, flow = a[..., s : s + h, s : s + w], flow[..., s : s + h, s : s + w]
            b = torch.stack([b[i, :, s + dy : s + dy + h, s + dx : s + dx + w] for i, (dx, dy) in enumerate(shift)])
            flow = flow - torch.from_numpy(shift).float().to(device)[:, :, None, None]
        return a * 2 - 1, b * 2 - 1, flow

    return sample


# --- loss and metrics ---------------------------------------------------------------------------------------------


def sequence_loss(predictions: list[torch.Tensor], target: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """RAFT's sequence loss: sum over iterations i of gamma ** (N - 1 - i) * mean |prediction_i - target|.

    Parameters
    ----------
    predictions : list of N tensors of shape (n_pairs, 2, height, width)
        RAFT's flow after each iteration.
    target : tensor of shape (n_pairs, 2, height, width)
    """
    n = len(predictions)
    return sum(gamma ** (n - 1 - i) * (p - target).abs().mean() for i, p in enumerate(predictions))


def estimate_flow(estimator: FlowEstimator, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """FlowEstimator over many pairs, EVAL_BATCH at a time: array of shape (n_pairs, height, width, 2)."""
    return np.concatenate(
        [estimator(first[i : i + EVAL_BATCH], second[i : i + EVAL_BATCH]) for i in range(0, len(first), EVAL_BATCH)]
    )


def tvl1_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Forward flow from ``first`` to ``second`` with scikit-image's TV-L1 (default settings) on grayscale frames.

    ``optical_flow_tvl1(reference, moving)`` returns (v, u) = (row, column) displacement such that
    ``moving(x + flow(x)) ≈ reference(x)``; with reference = frame t and moving = frame t + 1 that is the forward
    flow, so only the component order changes.

    Parameters
    ----------
    first, second : arrays of shape (n_pairs, height, width, 3), uint8

    Returns
    -------
    array of shape (n_pairs, height, width, 2), float32
        dx (rightwards), dy (downwards) in pixels.
    """
    out = np.empty((*first.shape[:3], 2), np.float32)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        v, u = optical_flow_tvl1(rgb2gray(a), rgb2gray(b))
        out[i, ..., 0], out[i, ..., 1] = u, v
    return out


# --- train and evaluate -------------------------------------------------------------------------------------------


def train_raft(
    data: BackboneData,
    arch: demo_tier.DemoBackbonesConfig,
    loop: LoopConfig,
    backbones_dir: str | Path,
    workdir: str | Path,
    device: str = "cpu",
    max_pairs_per_run: int | None = None,
) -> dict:
    """Train raft_small on the training runs' exact flow, select on validation EPE, save it (module docstring).

    Each step runs RAFT with ``min(TRAIN_FLOW_UPDATES, arch.raft.num_flow_updates)`` iterations (4 by default,
    against 12 at inference): its update operator is shared across iterations, so it keeps refining when run
    longer, as RAFT itself trains with 12 and tests with 32. A training step (batch 8, 128 x 128, one CPU thread)
    costs 1.1 s at 4 iterations, 1.5 s at 6 and about 4 s at 12. Validation runs the inference count.

    Parameters
    ----------
    data : BackboneData
        A simulated subject; its train split's runs give training pairs, its val split's runs validation pairs.
    arch : DemoBackbonesConfig
        Its ``raft`` section (inference iterations) is saved with the weights.
    loop : LoopConfig
        Optimisation settings; ``batch_size`` pairs per step.
    backbones_dir : str or Path
        The model is saved to ``backbones_dir/raft`` (what ``load_backbone("raft", "demo", backbones_dir)`` reads).
    workdir : str or Path
        This role's checkpoint folder; a finished or interrupted run there is resumed, not repeated.
    device : str
    max_pairs_per_run : int, optional
        Training pairs per run, evenly spaced in time, decoded once before training (default: as many as fit in
        PAIR_MEMORY_BYTES, 512 MiB, over all runs: 655 per run for five 128 x 128 runs).

    Returns
    -------
    dict
        ``data_key``, ``steps``, ``start_step`` (where this call began), ``best_step``, ``best_score``
        (validation EPE in pixels), ``seconds`` (this call), ``train_flow_updates``, ``n_train_pairs``,
        ``n_val_pairs``, ``n_params`` and ``history`` (the loop's validation records).

    Raises
    ------
    FileNotFoundError
        If ``data.root`` is not a simulated subject.
    ValueError
        If ``max_pairs_per_run`` is below 1, or a split has no runs or too few pairs with a defined flow.
    """
    start = time.time()
    root = check_simulated(data.root)
    if max_pairs_per_run is not None and max_pairs_per_run < 1:
        raise ValueError(f"max_pairs_per_run: expected None or an int >= 1, got {max_pairs_per_run}.")
    train_runs = split_runs(data, "train")
    step, size = clip_geometry(data, train_runs[0])
    train_pairs = training_pairs(root, train_runs, max_pairs_per_run, max_step=2 * step, margin=MAX_SHIFT)
    val_pairs = random_pairs(root, split_runs(data, "val"), N_VAL_PAIRS, VAL_SEED, step, size)
    n_updates = min(TRAIN_FLOW_UPDATES, arch.raft.num_flow_updates)

    torch.manual_seed(loop.seed)
    model = demo_tier.build_raft().to(device)

    def loss_fn(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        first, second, flow = batch
        return sequence_loss(model(first, second, num_flow_updates=n_updates), flow)

    def validate(model: torch.nn.Module) -> float:  # the wrapper load_backbone returns, around the training model
        estimator = FlowEstimator(model, arch.raft.num_flow_updates, "training")
        return end_point_error(estimate_flow(estimator, val_pairs.first, val_pairs.second), val_pairs.flow)

    start_step = checkpoint_step(Path(workdir))
    sample_batch = pair_batches(train_pairs, loop.batch_size, device, degrade_size=size, max_shift=MAX_SHIFT)
    model, result = train("raft", model, sample_batch, loss_fn, validate, loop, workdir)

    meta = {"data_key": data.dataset.key, "steps": loop.steps, "start_step": start_step,
            "best_step": result.best_step, "best_score": result.best_score, "seconds": time.time() - start,
            "train_flow_updates": n_updates, "n_train_pairs": len(train_pairs), "n_val_pairs": len(val_pairs),
            "train_steps": [1, 2 * step], "pair_step": step, "pair_size": list(size)}  # fmt: skip
    demo_tier.save_raft(model, arch.raft, Path(backbones_dir) / "raft", meta)
    return {**meta, "n_params": sum(p.numel() for p in model.parameters()), "history": result.history}


def evaluate_raft(
    data: BackboneData, backbones_dir: str | Path, device: str = "cpu", n_pairs: int = 200, seed: int = 0
) -> dict:
    """Test-run EPE of the saved demo RAFT, of TV-L1 and of zero flow, against the exact flow.

    Pairs are consecutive clip frames as the decoders see them: movie frames ``step`` apart (movie fps / clip
    fps), resized to the clip size, with the exact flow on the clip grid.

    Parameters
    ----------
    data : BackboneData
        A simulated subject; pairs come from its test split's runs, decoded from the mp4.
    backbones_dir : str or Path
        Holds ``raft/`` (loaded with ``load_backbone("raft", "demo", backbones_dir)``).
    device : str
    n_pairs : int
        Pairs (t, t + step) drawn without replacement, none across a scene cut.
    seed : int
        Seeds the drawing of pairs.

    Returns
    -------
    dict
        ``raft_epe``, ``tvl1_epe``, ``zero_flow_epe`` (mean over pixels and pairs of the L2 distance to the exact
        flow, in pixels of the clip frames), ``n_pairs``, ``raft_pair_step`` (movie frames between the two frames
        of a pair) and ``raft_pair_size`` ([height, width] of the clip frames).

    Raises
    ------
    FileNotFoundError
        If ``data.root`` is not a simulated subject, or ``backbones_dir/raft`` does not exist.
    ValueError
        If ``n_pairs`` is below 1 or above the test runs' pairs with a defined flow.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs: expected an int >= 1, got {n_pairs}.")
    root = check_simulated(data.root)
    estimator = load_backbone("raft", "demo", str(backbones_dir), device)
    runs = split_runs(data, "test")
    step, size = clip_geometry(data, runs[0])
    pairs = random_pairs(root, runs, n_pairs, seed, step, size)
    return {
        "raft_epe": end_point_error(estimate_flow(estimator, pairs.first, pairs.second), pairs.flow),
        "tvl1_epe": end_point_error(tvl1_flow(pairs.first, pairs.second), pairs.flow),
        "zero_flow_epe": end_point_error(np.zeros_like(pairs.flow), pairs.flow),
        "n_pairs": len(pairs),
        "raft_pair_step": step,
        "raft_pair_size": list(size),
    }
