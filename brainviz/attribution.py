"""Voxel-wise Captum attribution of each stage-1 decoder: which voxels drive a decoded feature.

Captum needs one scalar per sample, so each decoder's output is reduced to a cosine with a reference
(shared/reference/surfaces_and_app.md §6):

| decoder | input | objective (per sample) |
|---|---|---|
| semantic, fmri-encoder | volume / TR window | cos(decoded CLIP embedding, reference embedding) |
| structure | volume | cos(decoded first latent − g(baseline), reference latent − g(baseline)) |
| motion | volume (+ the first latent, held fixed) | cos(decoded frame-to-frame latent changes, reference changes) |
| flow | 5-TR window (+ the first frame, held fixed) | cos(decoded flow field, reference flow field) |

The reference is the ground-truth target by default (the caption's CLIP embedding, the clip's latents, the teacher
flow), or the decoder's own output ("why did it decode this"). Structure is centred on the decoder's output at the
baseline, so the cosine measures the clip-specific part of the latent and not the mean image every clip shares.

A second objective for the embedding decoders, ``objective="category"`` ("which voxels make it decode *this
object*"): the log-probability of the clip's category when the decoded embedding is classified against category
prototypes, log softmax_k(s · cos(f, p_k)) at the clip's category. The prototypes p_k are the class means of the
training captions' embeddings, centred on their mean (:func:`category_prototypes`; never test data), and s is the
decoder's own learned InfoNCE scale, exp(logit_scale) clamped at 100 as in training. A caption embedding also names
colours, directions and the camera, which low-level voxels carry; this objective asks about the object alone.

Three methods: ``saliency`` (one backward pass, |∂f/∂x|; interactive use), ``integrated_gradients`` (path integral
from the baseline; signed; its completeness error ``Σ attr − (f(x) − f(baseline))`` is reported as the convergence
delta) and ``pattern`` (the gradient turned into an activation pattern, below). The baseline is 0, the training mean
of z-scored voxels. These are attributions, not attention maps: the fMRI encoder's attention is in
:mod:`brainviz.attention`.

Why ``pattern``. A decoder is a backward model: its gradient is a weight vector, and weight vectors do not say where
the information is (Haufe et al. 2014, NeuroImage 87:96–110). A voxel that carries only noise shared with signal
voxels gets a large weight (it cancels that noise), and a signal that many voxels share is spread thinly over them.
Haufe's remedy turns weights w into the forward model's activation pattern Σw, with Σ the covariance of the inputs;
for a deep network the same idea is PatternAttribution (Kindermans et al. 2018, ICLR). Here ``pattern`` is Σ·∇f(x)
per clip, with Σ estimated on the *training* inputs (:class:`InputCovariance`, never the test clips). For a linear
decoder it is exactly Haufe's pattern; for a nonlinear one, the pattern of its local linearisation at each clip.
Measured on the simulated subject (README, "brainviz"): the structure decoder's saliency ranks its own role's
voxels below the others (ROC AUC 0.46), and so do the weights of the validation-optimal ridge decoder (0.42),
while its pattern separates them (0.95).

Caveat, measured on the demo decoders: the Mind-Animator decoders open with Linear → LayerNorm, which makes them
nearly invariant to the input's scale, so along the straight path from the zero baseline the output hardly moves
until the input is almost zero and then jumps. Few path steps miss the jump, and the convergence delta shows it
(structure decoder: mean |delta| 0.2–0.3 at 32–64 steps, against 4e-4 for the semantic decoder at 64). Read IG maps
of such a decoder with its delta, or use Saliency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, Saliency

METHODS = ("saliency", "integrated_gradients", "pattern")
DECODERS = ("semantic", "structure", "motion", "flow", "fmri-encoder")
OBJECTIVES = ("target", "category")  # see the module docstring; "category" for the embedding decoders only
EMBEDDING_DECODERS = ("semantic", "fmri-encoder")
MAX_LOGIT_SCALE = 100.0  # the clamp of exp(logit_scale) in the decoders' InfoNCE
Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Attribution:
    """Attributions of a batch of inputs to one decoder's objective."""

    values: np.ndarray  # same shape as the input: (batch, n_voxels) or (batch, window, n_voxels), float32
    method: str  # "saliency" (|gradient|), "integrated_gradients" (signed) or "pattern" (Σ·gradient, signed)
    objective: np.ndarray  # (batch,) objective at the input
    delta: np.ndarray | None  # (batch,) IG completeness error; None for saliency
    seconds: float

    def voxel_map(self, absolute: bool = True) -> np.ndarray:
        """One value per voxel, (batch, n_voxels): the window's TRs summed (of |values| when ``absolute``)."""
        v = np.abs(self.values) if absolute else self.values
        return v.sum(axis=1) if v.ndim == 3 else v


class InputCovariance:
    """The covariance Σ of a decoder's training inputs, applied to gradients without forming the matrix.

    ``apply(g)`` = Σg = Xcᵀ(Xc g) / (n − 1), with Xc the centred training inputs flattened to (n, features): a
    (4,500 × 4,500) or window-sized matrix is never built, and memory is that of the inputs.

    Parameters
    ----------
    inputs : array of shape (n, n_voxels) or (n, window, n_voxels)
        The decoder's inputs on its training split (never the clips being attributed), n ≥ 2.

    Raises
    ------
    ValueError
        If fewer than 2 samples, the wrong number of dimensions, or non-finite values.
    """

    def __init__(self, inputs: np.ndarray):
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim not in (2, 3) or len(x) < 2 or not np.isfinite(x).all():
            raise ValueError(
                "covariance inputs: expected finite training inputs of shape (n >= 2, n_voxels) or (n >= 2, window, "
                f"n_voxels), got shape {x.shape}{'' if np.isfinite(x).all() else ' with NaN or inf'}."
            )
        self.shape = x.shape[1:]
        flat = x.reshape(len(x), -1)
        self._centred = torch.from_numpy(flat - flat.mean(axis=0, dtype=np.float64).astype(np.float32))

    def apply(self, gradients: np.ndarray | torch.Tensor) -> np.ndarray:
        """Σ·g for a batch of gradients of shape (batch, *shape) → the same shape, float32."""
        g = torch.as_tensor(np.asarray(gradients, dtype=np.float32))
        if tuple(g.shape[1:]) != tuple(self.shape):
            raise ValueError(
                f"gradients: expected shape (batch, {', '.join(map(str, self.shape))}) like the covariance's inputs, "
                f"got {tuple(g.shape)}."
            )
        xc = self._centred
        out = (xc.T @ (xc @ g.reshape(len(g), -1).T)).T / (len(xc) - 1)
        return out.reshape(g.shape).numpy()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)


def _reference(reference: np.ndarray | torch.Tensor, batch: int, name: str) -> torch.Tensor:
    ref = torch.as_tensor(np.asarray(reference, dtype=np.float32))
    if ref.shape[0] != batch:
        raise ValueError(f"{name}: expected one reference per input ({batch}), got shape {tuple(ref.shape)}.")
    return ref


def category_prototypes(embeddings: np.ndarray, categories: np.ndarray, n_categories: int) -> np.ndarray:
    """Category prototypes for ``objective="category"``: per-category means of embeddings, centred on their mean.

    Parameters
    ----------
    embeddings : array of shape (n, dim)
        Training-split caption embeddings (the decoder's target space).
    categories : array of shape (n,), int
        Each row's category, 0 … n_categories − 1.
    n_categories : int

    Returns
    -------
    array of shape (n_categories, dim), float32

    Raises
    ------
    ValueError
        If the shapes disagree, a category is out of range or has no row.
    """
    e, c = np.asarray(embeddings, dtype=np.float64), np.asarray(categories)
    if e.ndim != 2 or c.shape != (len(e),):
        raise ValueError(
            f"category_prototypes: expected embeddings (n, dim) and categories (n,), got {e.shape} and {c.shape}."
        )
    counts = np.bincount(c.astype(int), minlength=n_categories) if c.size and c.min() >= 0 else None
    if counts is None or len(counts) != n_categories or (counts == 0).any():
        found = sorted(set(c.tolist()))
        raise ValueError(
            f"category_prototypes: expected every category 0 to {n_categories - 1} at least once, got {found}."
        )
    means = np.stack([e[c == k].mean(axis=0) for k in range(n_categories)])
    return (means - means.mean(axis=0)).astype(np.float32)


def decoder_objective(
    decoder: str,
    model: torch.nn.Module,
    reference: np.ndarray,
    *,
    first: np.ndarray | None = None,
    objective: str = "target",
    prototypes: np.ndarray | None = None,
) -> Objective:
    """The scalar objective of one decoder as a function of its fMRI input (see the module table).

    Parameters
    ----------
    decoder : str
        One of ``DECODERS``.
    model : the trained decoder (put in eval mode here)
    reference : array
        Per input sample: embedding (batch, embed_dim) for semantic / fmri-encoder; first latent (batch, channels,
        h, w) for structure; latents (batch, n_frames, channels, h, w) for motion; flows (batch, n_flows, 2, grid,
        grid) for flow.
    first : array, optional
        Held-fixed second input: the first latent (batch, channels, h, w) for motion (default: ``reference[:, 0]``),
        the uint8 first frames (batch, height, width, 3) for flow (required).
    objective : {"target", "category"}
        "category" (semantic and fmri-encoder only): ``reference`` is then each input's category index (batch,),
        int, and ``prototypes`` is required.
    prototypes : array of shape (n_categories, embed_dim), optional
        From :func:`category_prototypes`.

    Returns
    -------
    callable mapping an fMRI tensor of batch size ``batch`` to a (batch,) tensor

    Raises
    ------
    ValueError
        For an unknown decoder or objective, a reference of the wrong batch size, flow without ``first``, or the
        category objective for a non-embedding decoder, without prototypes or with categories out of range.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder: expected one of {list(DECODERS)}, got {decoder!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, got {objective!r}.")
    model.eval()
    if objective == "category":
        return _category_objective(decoder, model, reference, prototypes)
    ref = _reference(reference, len(reference), "reference")
    n = ref.shape[0]

    def rows(x: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        # IG evaluates scaled copies of the batch stacked along dim 0: repeat the fixed input to match
        return fixed.repeat((x.shape[0] // n,) + (1,) * (fixed.ndim - 1)) if x.shape[0] != n else fixed

    if decoder in EMBEDDING_DECODERS:
        return lambda x: _cosine(model(x).embedding, rows(x, ref))
    if decoder == "structure":
        with torch.no_grad():
            centre = model(torch.zeros(1, model.config.n_voxels))
        return lambda x: _cosine(model(x) - centre, rows(x, ref) - centre)
    if decoder == "motion":
        start = ref[:, 0] if first is None else _reference(first, n, "first")
        change = torch.diff(ref, dim=1)
        return lambda x: _cosine(torch.diff(model.generate(rows(x, start), x), dim=1), rows(x, change))
    if first is None:
        raise ValueError("flow: expected the clips' first frames (first=, uint8 (batch, height, width, 3)), got None.")
    from pipelines.features.backbones import to_tensor

    frames = to_tensor(np.asarray(first))
    if frames.shape[0] != n:
        raise ValueError(f"first: expected one first frame per input ({n}), got {frames.shape[0]}.")
    return lambda x: _cosine(model.expected_flow(model(x, rows(x, frames))), rows(x, ref))


def _category_objective(
    decoder: str, model: torch.nn.Module, categories: np.ndarray, prototypes: np.ndarray | None
) -> Objective:
    if decoder not in EMBEDDING_DECODERS:
        raise ValueError(
            f"objective 'category': expected one of the embedding decoders {list(EMBEDDING_DECODERS)}, got {decoder!r}."
        )
    if prototypes is None:
        raise ValueError("objective 'category': expected prototypes= (category_prototypes(...)), got None.")
    protos = F.normalize(torch.as_tensor(np.asarray(prototypes, dtype=np.float32)), dim=1)
    labels = np.asarray(categories)
    if (
        labels.ndim != 1
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels < 0).any()
        or (labels >= len(protos)).any()
    ):
        raise ValueError(
            f"objective 'category': expected one category index in 0 to {len(protos) - 1} per input, got "
            f"{labels.dtype} of shape {labels.shape} with values {sorted(set(labels.ravel().tolist()))[:8]}."
        )
    index = torch.as_tensor(labels, dtype=torch.long)
    n = len(index)

    def evidence(x: torch.Tensor) -> torch.Tensor:
        scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        logits = scale * F.normalize(model(x).embedding, dim=1) @ protos.T
        rows = index.repeat(x.shape[0] // n) if x.shape[0] != n else index  # IG stacks scaled copies
        return F.log_softmax(logits, dim=1).gather(1, rows[:, None])[:, 0]

    return evidence


def attribute(
    objective: Objective,
    inputs: np.ndarray,
    method: str = "saliency",
    *,
    baseline: np.ndarray | float = 0.0,
    n_steps: int = 32,
    internal_batch_size: int | None = 16,
    covariance: InputCovariance | None = None,
) -> Attribution:
    """Attribute ``objective(inputs)`` to every input value.

    Parameters
    ----------
    objective : callable
        From :func:`decoder_objective`: fMRI tensor → (batch,) scalars.
    inputs : array of shape (batch, n_voxels) or (batch, window, n_voxels)
        z-scored fMRI.
    method : {"saliency", "integrated_gradients", "pattern"}
    baseline : float or array broadcastable to ``inputs``
        Integrated gradients' reference input; 0 = the training mean of z-scored voxels.
    n_steps, internal_batch_size : int
        Integrated gradients' path steps and how many scaled inputs go through the model at once (memory).
    covariance : InputCovariance
        Required by ``pattern``: the covariance of the decoder's training inputs, of the inputs' shape.

    Returns
    -------
    Attribution

    Raises
    ------
    ValueError
        For an unknown method, non-finite inputs, a non-positive n_steps, or ``pattern`` without a covariance of
        the inputs' shape.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}.")
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim not in (2, 3) or not np.isfinite(x).all():
        raise ValueError(
            f"inputs: expected finite fMRI of shape (batch, n_voxels) or (batch, window, n_voxels), got shape "
            f"{x.shape}{'' if np.isfinite(x).all() else ' with NaN or inf'}."
        )
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps: expected a positive integer, got {n_steps!r}.")
    if method == "pattern" and (covariance is None or tuple(covariance.shape) != x.shape[1:]):
        got = "None" if covariance is None else f"one of shape {tuple(covariance.shape)}"
        raise ValueError(
            f"pattern: expected the training inputs' covariance (covariance=InputCovariance(...)) of shape "
            f"{x.shape[1:]}, got {got}."
        )
    tensor = torch.from_numpy(x).requires_grad_(True)
    start = time.perf_counter()
    delta = None
    if method == "saliency":
        values = Saliency(objective).attribute(tensor, abs=True)
    elif method == "pattern":
        values = torch.from_numpy(covariance.apply(Saliency(objective).attribute(tensor, abs=False).detach()))
    else:
        base = torch.as_tensor(np.broadcast_to(np.asarray(baseline, np.float32), x.shape).copy())
        values, delta = IntegratedGradients(objective).attribute(
            tensor,
            baselines=base,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        delta = delta.detach().numpy().astype(np.float32)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        value = objective(torch.from_numpy(x)).numpy()
    return Attribution(values.detach().numpy().astype(np.float32), method, value, delta, seconds)


def role_recovery_auc(scores: np.ndarray, is_role: np.ndarray) -> float:
    """ROC AUC of ``scores`` in separating voxels of a simulated role (True) from the others.

    Parameters
    ----------
    scores : array of shape (n_voxels,)
        E.g. mean |attribution| per voxel.
    is_role : bool array of shape (n_voxels,)

    Raises
    ------
    ValueError
        If shapes differ, scores are not finite, or one class is empty.
    """
    from sklearn.metrics import roc_auc_score

    scores, is_role = np.asarray(scores, np.float64), np.asarray(is_role, bool)
    if scores.shape != is_role.shape or scores.ndim != 1:
        raise ValueError(
            f"expected scores and labels of one shape (n_voxels,), got {scores.shape} and {is_role.shape}."
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores: expected finite values, got NaN or inf.")
    if is_role.all() or not is_role.any():
        raise ValueError(
            f"is_role: expected voxels both in and out of the role, got {int(is_role.sum())} of {len(is_role)}."
        )
    return float(roc_auc_score(is_role, scores))
