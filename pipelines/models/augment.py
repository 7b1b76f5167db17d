"""fMRI augmentations of the stage-1 decoders: Mind-Animator's sparsification, NeuroCine's spatial masking and
temporal interpolation.

Every function returns a new tensor and leaves its input untouched, draws its randomness from an optional
``torch.Generator`` (the same generator state gives the same result) and works on any device.

Deviations from the reference (``methods_and_protocols.md``):

- :func:`sparsify` (C.1) works on a copy. The Mind-Animator code zeroes the training matrix in place, so the zeros
  accumulate over epochs (about 10 % after one epoch, 1 - 0.9**n after n); here every call zeroes a fresh
  ``fraction_picked / 2`` of the entries of the batch it is given.
- :func:`spatial_mask` and :func:`temporal_interpolate` (C.5): NeuroCine released no code and its abstract names
  the two augmentations only. What is fixed here — exact counts per sample, token (voxel-patch) positions shared by
  every TR of a window, replacement by linear interpolation between the nearest kept TRs — is this project's reading,
  stated in each docstring.
"""

from __future__ import annotations

import torch


def _check_tensor(x: torch.Tensor, name: str, min_ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}; convert with .float().")
    if x.ndim < min_ndim:
        raise ValueError(f"{name}: expected a tensor of shape {layout}, got shape {tuple(x.shape)}.")


def _check_fraction(value: float, name: str, upper_open: bool = False) -> None:
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}.")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform numbers drawn on the generator's device (CPU by default), then moved to ``device``."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=source).to(device)


def _random_subset(
    n_rows: int, n_items: int, n_chosen: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Bool array of shape (n_rows, n_items) with exactly ``n_chosen`` True per row, uniformly at random."""
    order = _uniform((n_rows, n_items), generator, device).argsort(dim=1)
    chosen = torch.zeros(n_rows, n_items, dtype=torch.bool, device=device)
    chosen.scatter_(1, order[:, :n_chosen], True)
    return chosen


def sparsify(
    fmri: torch.Tensor, fraction_picked: float = 0.2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mind-Animator's fMRI sparsification: pick ``fraction_picked`` of all entries and zero half of them.

    Exactly ``round(fraction_picked * fmri.numel()) // 2`` entries of the whole batch, chosen uniformly at random
    without replacement, are set to zero in a copy (the reference zeroes in place; see the module docstring).
    Mind-Animator uses 0.2 for the semantic decoder and 0.4 for the structure decoder (reference C.1).

    Parameters
    ----------
    fmri : tensor of any shape, e.g. (batch, n_voxels), floating point
        The batch; it is not modified.
    fraction_picked : float in [0, 1]
        Fraction of entries picked; half of the picked ones are zeroed.
    generator : torch.Generator, optional
        Source of randomness (CPU or the tensor's device).

    Returns
    -------
    tensor of the shape of ``fmri``
        A copy with the chosen entries set to zero.

    Raises
    ------
    ValueError
        If ``fraction_picked`` is outside [0, 1] or ``fmri`` is not floating point.
    TypeError
        If ``fmri`` is not a tensor.
    """
    _check_tensor(fmri, "fmri", 1, "(batch, n_voxels)")
    _check_fraction(fraction_picked, "fraction_picked")
    n_zeroed = round(fraction_picked * fmri.numel()) // 2
    out = fmri.clone()
    zeroed = _random_subset(1, fmri.numel(), n_zeroed, generator, fmri.device).view(fmri.shape)
    out[zeroed] = 0.0
    return out


def spatial_mask(
    tokens: torch.Tensor, ratio: float, generator: torch.Generator | None = None, fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeuroCine's spatial masking: hide a fraction of token positions, the same ones in every TR of a window.

    The input is a window of patchified fMRI (a token is a patch of voxels, e.g. from
    :func:`pipelines.models.neurocine.patchify`); masking whole patches, not single voxels, keeps it from being
    undone by the spatial smoothness of BOLD. Each sample draws its own ``round(ratio * n_tokens)`` positions,
    uniformly without replacement, and all TRs of its window share them.

    Parameters
    ----------
    tokens : tensor of shape (batch, window, n_tokens, token_dim), floating point
        The window; it is not modified.
    ratio : float in [0, 1)
        γ_spa, the fraction of token positions masked.
    generator : torch.Generator, optional
        Source of randomness.
    fill : float
        Value written into masked tokens (0 is the mean of z-scored fMRI).

    Returns
    -------
    masked : tensor of shape (batch, window, n_tokens, token_dim)
        A copy with the masked tokens set to ``fill``.
    mask : bool tensor of shape (batch, n_tokens)
        True where a token position is masked (in every TR of the window).

    Raises
    ------
    ValueError
        If ``tokens`` is not 4-D floating point or ``ratio`` is outside [0, 1).
    """
    _check_tensor(tokens, "tokens", 4, "(batch, window, n_tokens, token_dim)")
    if tokens.ndim != 4:
        raise ValueError(
            f"tokens: expected a tensor of shape (batch, window, n_tokens, token_dim), got shape {tuple(tokens.shape)}."
        )
    _check_fraction(ratio, "ratio", upper_open=True)
    batch, _, n_tokens, _ = tokens.shape
    mask = _random_subset(batch, n_tokens, round(ratio * n_tokens), generator, tokens.device)
    return tokens.masked_fill(mask[:, None, :, None], fill), mask


def temporal_interpolate(
    fmri: torch.Tensor, ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeuroCine's temporal interpolation: replace TRs of a window by interpolating their nearest kept neighbours.

    Each sample draws ``round(ratio * window)`` TRs, uniformly without replacement. A drawn TR ``t`` whose nearest
    kept TRs are ``a < t < b`` becomes the distance-weighted mean ``((b - t) x_a + (t - a) x_b) / (b - a)``, i.e.
    weights inversely proportional to the distances (linear interpolation); with kept TRs on one side only it
    becomes a copy of the nearest one. Interpolation reads the original values of kept TRs only, never another
    replaced TR. Kept TRs are returned unchanged.

    Parameters
    ----------
    fmri : tensor of shape (batch, window, ...), floating point
        A TR window: (batch, window, n_voxels) or (batch, window, n_tokens, token_dim); not modified.
    ratio : float in [0, 1)
        γ_tem, the fraction of TRs replaced; at least one TR must be kept.
    generator : torch.Generator, optional
        Source of randomness.

    Returns
    -------
    interpolated : tensor of the shape of ``fmri``
        A copy with the drawn TRs replaced.
    replaced : bool tensor of shape (batch, window)
        True at the replaced TRs.

    Raises
    ------
    ValueError
        If ``fmri`` has fewer than 3 dimensions, ``ratio`` is outside [0, 1), or it would replace every TR.
    """
    _check_tensor(fmri, "fmri", 3, "(batch, window, n_voxels) or (batch, window, n_tokens, token_dim)")
    _check_fraction(ratio, "ratio", upper_open=True)
    batch, window = fmri.shape[:2]
    n_replaced = round(ratio * window)
    if n_replaced >= window:
        raise ValueError(
            f"ratio: {ratio} replaces {n_replaced} of the {window} TRs of the window; expected at least one TR "
            f"kept (ratio < {(window - 0.5) / window:.3g} for this window)."
        )
    replaced = _random_subset(batch, window, n_replaced, generator, fmri.device)
    return interpolate_trs(fmri, replaced), replaced


def interpolate_trs(fmri: torch.Tensor, replaced: torch.Tensor) -> torch.Tensor:
    """Replace the TRs flagged in ``replaced`` by linear interpolation between their nearest kept TRs.

    The deterministic half of :func:`temporal_interpolate` (same rule), for a given pattern.

    Parameters
    ----------
    fmri : tensor of shape (batch, window, ...)
    replaced : bool tensor of shape (batch, window)
        True at the TRs to replace; every row keeps at least one TR.

    Returns
    -------
    tensor of the shape of ``fmri``

    Raises
    ------
    ValueError
        If ``replaced`` has the wrong shape or dtype, or flags every TR of a sample.
    """
    _check_tensor(fmri, "fmri", 3, "(batch, window, n_voxels) or (batch, window, n_tokens, token_dim)")
    batch, window = fmri.shape[:2]
    if not isinstance(replaced, torch.Tensor) or replaced.dtype != torch.bool or replaced.shape != (batch, window):
        got = f"{replaced.dtype} {tuple(replaced.shape)}" if isinstance(replaced, torch.Tensor) else type(replaced)
        raise ValueError(f"replaced: expected a bool tensor of shape ({batch}, {window}), got {got}.")
    kept = ~replaced.to(fmri.device)
    if not bool(kept.any(dim=1).all()):
        raise ValueError("replaced: expected at least one kept TR per sample, got a sample with every TR replaced.")
    position = torch.arange(window, device=fmri.device).expand(batch, window)
    # nearest kept TR at or before t (-1 if none) and at or after t (window if none)
    before = torch.where(kept, position, -1).cummax(dim=1).values
    after = torch.where(kept, position, window).flip(1).cummin(dim=1).values.flip(1)
    has_before, has_after = before >= 0, after < window
    both = has_before & has_after & (after > before)
    w_after = torch.where(both, (position - before) / (after - before).clamp(min=1), 0.0)
    w_after = torch.where(~has_before, 1.0, w_after)  # kept TRs after t only: copy the nearest one
    rows = torch.arange(batch, device=fmri.device)[:, None]
    x_before = fmri[rows, before.clamp(min=0)]
    x_after = fmri[rows, after.clamp(max=window - 1)]
    w_after = w_after.to(fmri.dtype).view(batch, window, *([1] * (fmri.ndim - 2)))
    # a where, not a blend, so that kept TRs come back bit-exact
    out = torch.where(w_after == 0, x_before, (1 - w_after) * x_before + w_after * x_after)
    return torch.where(w_after == 1, x_after, out)
