"""CIFTI-2 dense time series: read with boundary checks, write with the right intent, HCP 91k grayordinate axis.

The cortex → grayordinate mapping always comes from the file's own ``BrainModelAxis``; hard-coded slices appear
only in sanity checks (shared/reference/surfaces_and_app.md §1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import cifti2

N_GRAYORDINATES = 91282  # HCP fsLR-32k, 2 mm: 59,412 cortical vertices + 31,870 subcortical voxels
N_CORTEX = 59412
N_VERTICES_PER_HEMISPHERE = 32492
CORTEX_LEFT = "CIFTI_STRUCTURE_CORTEX_LEFT"
CORTEX_RIGHT = "CIFTI_STRUCTURE_CORTEX_RIGHT"
_RESOURCES = Path(__file__).parent / "resources"


@dataclass(frozen=True)
class DenseSeries:
    """A CIFTI dense time series held in memory."""

    path: str
    data: np.ndarray  # array of shape (n_trs, n_grayordinates), float32
    axis: cifti2.BrainModelAxis
    tr: float  # seconds between volumes

    @property
    def n_trs(self) -> int:
        return self.data.shape[0]


@functools.lru_cache(maxsize=1)
def hcp_91k_axis() -> cifti2.BrainModelAxis:
    """The exact HCP 91,282-grayordinate BrainModelAxis (cortex L, cortex R, 19 subcortical structures).

    Built from ``resources/hcp_91k_axis.npz`` (see ``resources/make_hcp_91k_axis.py`` for its provenance).
    """
    with np.load(_RESOURCES / "hcp_91k_axis.npz") as f:
        arrays = {k: f[k] for k in f.files}
    n_vertices = int(arrays["n_vertices"])
    axis = cifti2.BrainModelAxis.from_surface(arrays["left_vertices"], n_vertices, name=CORTEX_LEFT)
    axis = axis + cifti2.BrainModelAxis.from_surface(arrays["right_vertices"], n_vertices, name=CORTEX_RIGHT)
    # One constructor call for all 31,870 voxels: concatenating 19 axes one by one takes seconds.
    axis = axis + cifti2.BrainModelAxis(
        name=arrays["structure_names"][arrays["voxel_structures"]],
        voxel=arrays["voxels"].astype(int),
        affine=arrays["affine"],
        volume_shape=tuple(int(s) for s in arrays["volume_shape"]),
    )
    return axis


def cortex_columns(axis: cifti2.BrainModelAxis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns of the left and right cortical surface models of ``axis``, in that order.

    Returns
    -------
    columns : array of shape (n_cortex,), int
        Column indices into the file's grayordinate axis.
    hemisphere : array of shape (n_cortex,), int
        0 for left, 1 for right.
    vertex : array of shape (n_cortex,), int
        fsLR-32k vertex index of each column.
    """
    columns, hemis, vertices = [], [], []
    for hemi, name in enumerate((CORTEX_LEFT, CORTEX_RIGHT)):
        cols = np.flatnonzero((axis.name == name) & axis.surface_mask)
        columns.append(cols)
        hemis.append(np.full(len(cols), hemi))
        vertices.append(axis.vertex[cols])
    return np.concatenate(columns), np.concatenate(hemis), np.concatenate(vertices)


def standard_grayordinates(axis: cifti2.BrainModelAxis, columns: np.ndarray) -> np.ndarray:
    """Map cortical columns of ``axis`` to their index in the standard HCP 91k order (−1 where absent)."""
    std = hcp_91k_axis()
    lookup: dict[tuple[str, int], int] = {}
    for name in (CORTEX_LEFT, CORTEX_RIGHT):
        cols = np.flatnonzero(std.name == name)
        lookup.update({(name, int(v)): int(c) for c, v in zip(cols, std.vertex[cols], strict=True)})
    return np.array([lookup.get((str(axis.name[c]), int(axis.vertex[c])), -1) for c in columns], dtype=np.int64)


def read_dtseries(
    path: str | Path,
    *,
    expected_grayordinates: int | None = N_GRAYORDINATES,
    expected_tr: float | None = None,
    min_volumes: int = 1,
) -> DenseSeries:
    """Read a CIFTI-2 dense time series and check it.

    Parameters
    ----------
    path : str or Path
        A ``*.dtseries.nii`` file.
    expected_grayordinates : int or None
        Required number of grayordinates (91,282 for HCP fsLR-32k at 2 mm); None accepts any.
    expected_tr : float or None
        Required TR in seconds (checked against the file's SeriesAxis step, to 1 ms).
    min_volumes : int
        Fewest time points accepted.

    Returns
    -------
    DenseSeries
        ``data`` is an array of shape (n_trs, n_grayordinates), float32.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a CIFTI-2 dense time series, or its size, TR or values are wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFTI file {path} does not exist.")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises many types for foreign files
        raise ValueError(
            f"{path} is not a CIFTI-2 file: expected a *.dtseries.nii dense time series, nibabel says: {err}"
        ) from err
    if not isinstance(img, cifti2.Cifti2Image):
        raise ValueError(
            f"{path} is not a CIFTI-2 file: expected a *.dtseries.nii dense time series, found a "
            f"{type(img).__name__} of shape {img.shape}. Pass the *_Atlas.dtseries.nii file from the cifti/ folder."
        )
    series, axis = img.header.get_axis(0), img.header.get_axis(1)
    if not isinstance(series, cifti2.SeriesAxis) or not isinstance(axis, cifti2.BrainModelAxis):
        raise ValueError(
            f"{path}: expected a dense time series (SeriesAxis x BrainModelAxis), found "
            f"{type(series).__name__} x {type(axis).__name__}."
        )
    n_trs, n_gray = img.shape
    if expected_grayordinates is not None and n_gray != expected_grayordinates:
        raise ValueError(
            f"{path} has {n_gray} grayordinates; expected {expected_grayordinates}"
            + (
                " (HCP fsLR-32k, cortex + subcortex). Pass the *_Atlas.dtseries.nii file, not a cortex-only export."
                if expected_grayordinates == N_GRAYORDINATES
                else "."
            )
        )
    tr = (
        float(series.step) * (1e-3 if series.unit.upper() == "MSEC" else 1.0)
        if hasattr(series, "unit")
        else float(series.step)
    )
    if expected_tr is not None and abs(tr - expected_tr) > 1e-3:
        raise ValueError(f"{path} has TR {tr:g} s; expected {expected_tr:g} s. Check the data set or the config's tr.")
    if n_trs < min_volumes:
        raise ValueError(f"{path} has {n_trs} volumes; expected at least {min_volumes}.")
    data = np.asarray(img.dataobj, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        t, g = np.argwhere(bad)[0]
        raise ValueError(
            f"{path} contains {int(bad.sum())} NaN/Inf values (first at volume {t}, grayordinate {g}); "
            "expected finite values everywhere. Re-export the run or exclude it."
        )
    return DenseSeries(str(path), data, axis, tr)


def write_dtseries(path: str | Path, data: np.ndarray, tr: float, axis: cifti2.BrainModelAxis | None = None) -> Path:
    """Write a CIFTI-2 dense time series (intent ConnDenseSeries).

    Parameters
    ----------
    path : str or Path
        Output file; should end in ``.dtseries.nii``.
    data : array of shape (n_trs, n_grayordinates)
    tr : float
        Seconds between volumes.
    axis : BrainModelAxis, optional
        Defaults to the HCP 91k axis.
    """
    axis = hcp_91k_axis() if axis is None else axis
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != len(axis):
        raise ValueError(f"data: expected shape (n_trs, {len(axis)}), got {data.shape}.")
    series = cifti2.SeriesAxis(start=0.0, step=float(tr), size=data.shape[0], unit="SECOND")
    img = cifti2.Cifti2Image(data, header=(series, axis))
    img.nifti_header.set_intent("ConnDenseSeries")  # nibabel does not infer it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(path)
    return path
