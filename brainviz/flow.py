"""Optical-flow images and end-point error: decoded flow beside the ground-truth (RAFT) flow.

Flows are arrays of shape (n_frames, 2, height, width): u (rightwards) and v (downwards), in pixels. Colours follow
the Middlebury / Baker et al. (ICCV'07) wheel through ``torchvision.utils.flow_to_image``: zero flow is white,
right is red, down is yellow, left is cyan/blue, up is violet, and saturation grows with magnitude.

``flow_to_image`` divides by the largest norm *in the batch it is given*, so two calls are not comparable. Here the
flow is divided by one ``max_radius`` first (the same for the decoded and the target flow), magnitudes above it are
clipped, and one unit-norm dummy pixel is appended so that torchvision's own normalisation divides by 1 and changes
nothing (shared/reference/surfaces_and_app.md §7).

NaN marks pixels without a valid flow (e.g. outside a mask): they render grey, are NaN in the EPE map and are left
out of the per-frame EPE. Infinite values are an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torchvision.utils import flow_to_image

from pipelines.evaluation.metrics import end_point_error

NAN_RGB = (128, 128, 128)  # colour of pixels whose flow is NaN: neither white (zero flow) nor a wheel colour


@dataclass(frozen=True)
class FlowPanels:
    """Everything the app shows for one clip's flow, as plain arrays (no matplotlib needed).

    Attributes
    ----------
    predicted_rgb, target_rgb : arrays of shape (n_frames, height, width, 3), uint8
        Decoded and target flow colours, normalised by the same ``max_radius``.
    epe_map : array of shape (n_frames, height, width), float
        Per-pixel end-point error in pixels (NaN where either flow is NaN).
    per_frame_epe : array of shape (n_frames,), float
        Mean end-point error of each frame over its valid pixels, in pixels.
    mean_epe : float
        Mean end-point error over every valid pixel of every frame, in pixels.
    max_radius : float
        Flow magnitude (pixels) that maps to a fully saturated colour in both images.
    titles : tuple of str
        Names of the decoded and the target flow, e.g. ``("decoded", "RAFT")``.
    """

    predicted_rgb: np.ndarray
    target_rgb: np.ndarray
    epe_map: np.ndarray
    per_frame_epe: np.ndarray
    mean_epe: float
    max_radius: float
    titles: tuple[str, str]


def check_flow(flow: np.ndarray, name: str = "flow", *, allow_single: bool = False) -> np.ndarray:
    """Return ``flow`` as float64 after checking its layout (n_frames, 2, height, width) and finiteness.

    Raises
    ------
    TypeError
        If the values are not real numbers.
    ValueError
        If the shape is wrong or a value is infinite.
    """
    flow = np.asarray(flow)
    if flow.dtype.kind not in "iuf":  # signed / unsigned integers and floats
        raise TypeError(f"{name}: expected real numbers (float), got dtype {flow.dtype}.")
    layouts = "(n_frames, 2, height, width)" + (" or (2, height, width)" if allow_single else "")
    if flow.ndim not in ((3, 4) if allow_single else (4,)):
        raise ValueError(f"{name}: expected an array of shape {layouts}, got shape {flow.shape}.")
    if flow.shape[-3] != 2:
        raise ValueError(
            f"{name}: expected 2 flow components (u, v) on axis {flow.ndim - 3}, got shape {flow.shape}. "
            "Move the component axis, e.g. np.moveaxis(flow, -1, -3) for (n_frames, height, width, 2)."
        )
    flow = flow.astype(np.float64)
    if np.isinf(flow).any():
        raise ValueError(
            f"{name}: expected finite flow values (NaN marks invalid pixels), got {np.isinf(flow).sum()} infinite values."
        )
    return flow


def check_pair(predicted: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check a decoded and a target flow of one shape (n_frames, 2, height, width); return both as float64."""
    predicted, target = check_flow(predicted, "predicted"), check_flow(target, "target")
    if predicted.shape != target.shape:
        raise ValueError(f"predicted: expected the target's shape {target.shape}, got {predicted.shape}.")
    return predicted, target


def shared_max_radius(*flows: np.ndarray) -> float:
    """Largest flow magnitude over all the given flows, for one colour normalisation shared between them.

    Parameters
    ----------
    *flows : arrays of shape (n_frames, 2, height, width) or (2, height, width)
        NaN pixels are ignored.

    Returns
    -------
    float
        The largest L2 norm of a flow vector, in pixels; 1.0 when every vector is zero or NaN (so that dividing by
        it is safe).

    Raises
    ------
    ValueError
        If no flow is given, or a flow has the wrong shape or infinite values.
    """
    if not flows:
        raise ValueError("shared_max_radius: expected at least one flow array, got none.")
    radius = 0.0
    for i, flow in enumerate(flows):
        flow = check_flow(flow, f"flows[{i}]", allow_single=True)
        norms = np.linalg.norm(flow, axis=-3)
        if np.isfinite(norms).any():
            radius = max(radius, float(np.nanmax(norms)))
    return radius if radius > 0 else 1.0


def flow_to_rgb(flows: np.ndarray, max_radius: float | None = None) -> np.ndarray:
    """Colour-code flow with the Middlebury wheel, normalised by one explicit radius.

    Parameters
    ----------
    flows : array of shape (n_frames, 2, height, width) or (2, height, width)
        u (rightwards) and v (downwards) in pixels; NaN pixels render grey.
    max_radius : float, optional
        Magnitude in pixels that maps to full saturation; larger vectors are clipped to it (direction kept).
        Pass the same value for flows that must be compared (see ``shared_max_radius``). Default: the largest
        magnitude in ``flows``.

    Returns
    -------
    array of shape (n_frames, height, width, 3) or (height, width, 3), uint8

    Raises
    ------
    ValueError
        If the shape is wrong, a value is infinite, or ``max_radius`` is not a positive finite number.
    """
    flows = check_flow(flows, "flows", allow_single=True)
    if max_radius is None:
        max_radius = shared_max_radius(flows)
    if not (np.isscalar(max_radius) and np.isfinite(max_radius) and max_radius > 0):
        raise ValueError(f"max_radius: expected a positive finite number of pixels, got {max_radius!r}.")
    single = flows.ndim == 3
    batch = flows[None] if single else flows
    invalid = np.isnan(batch).any(axis=1)

    unit = np.nan_to_num(batch) / max_radius
    norm = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = unit / np.maximum(norm, 1.0)  # clip magnitudes to 1, keeping the direction
    # One extra column whose first pixel has norm exactly 1: flow_to_image then divides by 1 (+eps), i.e. keeps
    # our normalisation instead of rescaling by this batch's own maximum.
    n, _, height, width = unit.shape
    padded = np.zeros((n, 2, height, width + 1), np.float32)
    padded[..., :width] = unit
    padded[0, 0, 0, width] = 1.0
    rgb = flow_to_image(torch.from_numpy(padded)).numpy()[..., :width]
    rgb = np.ascontiguousarray(np.moveaxis(rgb, 1, -1))
    rgb[invalid] = NAN_RGB
    return rgb[0] if single else rgb


def epe_map(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-pixel end-point error ‖predicted − target‖₂.

    Parameters
    ----------
    predicted, target : arrays of shape (n_frames, 2, height, width)

    Returns
    -------
    array of shape (n_frames, height, width), float64
        In pixels; NaN where either flow is NaN.

    Raises
    ------
    ValueError
        If the shapes differ or are not (n_frames, 2, height, width), or a value is infinite.
    """
    predicted, target = check_pair(predicted, target)
    return np.linalg.norm(predicted - target, axis=1)


def per_frame_epe(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean end-point error of each frame, as ``pipelines.evaluation.metrics.end_point_error`` computes it.

    Pixels where either flow is NaN are left out (RAFT's "mean over valid pixels"); on a frame without NaN the result
    equals ``end_point_error(predicted[i], target[i], axis=0)``.

    Parameters
    ----------
    predicted, target : arrays of shape (n_frames, 2, height, width)

    Returns
    -------
    array of shape (n_frames,), float64
        In pixels; NaN for a frame without any valid pixel.

    Raises
    ------
    ValueError
        If the shapes differ or are not (n_frames, 2, height, width), or a value is infinite.
    """
    predicted, target = check_pair(predicted, target)
    epe = np.full(len(predicted), np.nan)
    for i, (p, t) in enumerate(zip(predicted, target, strict=True)):
        p, t = p.reshape(2, -1).T, t.reshape(2, -1).T  # (height * width, 2) vectors
        valid = ~(np.isnan(p).any(axis=1) | np.isnan(t).any(axis=1))
        if valid.any():
            epe[i] = end_point_error(p[valid], t[valid], axis=-1)
    return epe


def flow_panels(
    predicted: np.ndarray,
    target: np.ndarray,
    *,
    titles: tuple[str, str] = ("decoded", "RAFT"),
    max_radius: float | None = None,
) -> FlowPanels:
    """Colour images and EPE numbers of a decoded flow beside its target, with one shared colour normalisation.

    Parameters
    ----------
    predicted, target : arrays of shape (n_frames, 2, height, width)
        Decoded and target (e.g. RAFT) flow in pixels.
    titles : tuple of str
        Names of the decoded and the target flow.
    max_radius : float, optional
        Shared saturation radius in pixels; default ``shared_max_radius(predicted, target)``.

    Returns
    -------
    FlowPanels

    Raises
    ------
    ValueError
        If the shapes differ or are wrong, a value is infinite, ``max_radius`` is not positive, or ``titles`` is
        not two strings.
    """
    predicted, target = check_pair(predicted, target)
    if len(titles) != 2:
        raise ValueError(f"titles: expected two names (decoded, target), got {titles!r}.")
    if max_radius is None:
        max_radius = shared_max_radius(predicted, target)
    valid = ~(np.isnan(predicted).any(axis=1) | np.isnan(target).any(axis=1))
    errors = epe_map(predicted, target)
    return FlowPanels(
        predicted_rgb=flow_to_rgb(predicted, max_radius),
        target_rgb=flow_to_rgb(target, max_radius),
        epe_map=errors,
        per_frame_epe=per_frame_epe(predicted, target),
        mean_epe=float(errors[valid].mean()) if valid.any() else float("nan"),
        max_radius=float(max_radius),
        titles=(str(titles[0]), str(titles[1])),
    )


def colour_wheel(size: int = 101) -> np.ndarray:
    """The flow colour legend: a disc of radius ``max_radius``, transparent outside.

    Returns
    -------
    array of shape (size, size, 4), uint8
        RGBA image; the centre is zero flow, the rim full saturation, +x right and +y down as in the images.
    """
    axis = np.linspace(-1.0, 1.0, size)
    u, v = np.meshgrid(axis, axis)
    rgb = flow_to_rgb(np.stack([u, v]), max_radius=1.0)
    alpha = np.where(u**2 + v**2 <= 1.0, 255, 0).astype(np.uint8)
    return np.dstack([rgb, alpha])


def flow_figure(
    predicted: np.ndarray,
    target: np.ndarray,
    *,
    titles: tuple[str, str] = ("decoded", "RAFT"),
    max_radius: float | None = None,
) -> Figure:
    """Matplotlib figure: target flow, decoded flow and EPE map per frame, plus per-frame EPE and a colour wheel.

    Frames run along the columns; the rows are the target flow, the decoded flow and the EPE map (with a colorbar
    in pixels). The bottom row holds the colour-wheel legend and a bar plot of the per-frame EPE. The figure is
    built without pyplot, so no display or backend is needed; save it with ``fig.savefig(path)``.

    Parameters
    ----------
    predicted, target : arrays of shape (n_frames, 2, height, width)
        Decoded and target flow in pixels.
    titles : tuple of str
        Names of the decoded and the target flow.
    max_radius : float, optional
        Shared saturation radius in pixels; default ``shared_max_radius(predicted, target)``.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        As ``flow_panels``.
    """
    panels = flow_panels(predicted, target, titles=titles, max_radius=max_radius)
    decoded_name, target_name = panels.titles
    n_frames, height, width = panels.epe_map.shape
    aspect = height / width
    fig = Figure(figsize=(1.6 * max(n_frames, 3) + 1.2, 1.6 * (3 * aspect + 1.2)), layout="constrained")
    # The last, narrow column holds the EPE colorbar, so the three image rows stay aligned.
    grid = fig.add_gridspec(
        4, n_frames + 1, height_ratios=[aspect, aspect, aspect, 1.2], width_ratios=[1.0] * n_frames + [0.08]
    )

    finite = panels.epe_map[np.isfinite(panels.epe_map)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    rows = [
        (f"{target_name} flow", panels.target_rgb, {}),
        (f"{decoded_name} flow", panels.predicted_rgb, {}),
        ("EPE (px)", panels.epe_map, {"cmap": "magma", "vmin": 0.0, "vmax": vmax}),
    ]
    for r, (name, images, style) in enumerate(rows):
        for f in range(n_frames):
            ax = fig.add_subplot(grid[r, f])
            shown = ax.imshow(images[f], **style)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=8)
            if f == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.colorbar(shown, cax=fig.add_subplot(grid[2, -1]), label="EPE (px)")

    legend_cell, bars_cell = grid[3, :].subgridspec(1, 2, width_ratios=[1, 3])
    legend = fig.add_subplot(legend_cell)
    r = panels.max_radius
    legend.imshow(colour_wheel(), extent=(-r, r, r, -r))  # y axis down, as in the images
    legend.set_title(f"direction (saturated at {r:.2g} px)", fontsize=7)
    legend.tick_params(labelsize=6)

    bars = fig.add_subplot(bars_cell)
    bars.bar(np.arange(n_frames), panels.per_frame_epe, color="tab:gray")
    bars.axhline(panels.mean_epe, color="tab:red", linewidth=1, label=f"mean {panels.mean_epe:.2f} px")
    bars.set_xlabel("frame", fontsize=8)
    bars.set_ylabel("EPE (px)", fontsize=8)
    bars.set_xticks(np.arange(n_frames))
    bars.tick_params(labelsize=7)
    bars.legend(fontsize=7, frameon=False)
    fig.suptitle(f"{decoded_name} vs {target_name} flow: mean EPE {panels.mean_epe:.2f} px", fontsize=10)
    return fig
