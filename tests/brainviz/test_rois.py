"""brainviz.rois: Glasser groups resolve and are disjoint, shares on constructed maps, lesions on constructed voxels."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from brainviz.rois import (
    ROI_GROUPS,
    ROI_LABELS,
    apply_lesion,
    group_masks,
    lesion_mask,
    roi_bar_chart,
    roi_shares,
    roi_table,
)
from pipelines.data.atlas import area_mask
from pipelines.data.cifti import N_GRAYORDINATES

EXPECTED_GROUPS = {
    "early_visual": ("V1", "V2", "V3", "V4"),
    "dorsal_motion": ("MT", "MST", "FST", "V4t", "V3A", "V3B", "V6", "V7", "IPS1"),
    "lateral": ("LO1", "LO2", "LO3", "PIT", "PH", "V3CD"),
    "ventral": ("FFC", "VVC", "VMV1", "VMV2", "VMV3", "V8"),
    "scene": ("PHA1", "PHA2", "PHA3", "RSC", "POS1", "POS2"),
    "tpoj": ("TPOJ1", "TPOJ2", "TPOJ3", "STV"),
}


def test_groups_are_the_issue_lists_in_order():
    assert list(ROI_GROUPS.items()) == list(EXPECTED_GROUPS.items())
    assert all(key in ROI_LABELS for key in [*ROI_GROUPS, "other"])


@pytest.mark.parametrize("area", [a for areas in EXPECTED_GROUPS.values() for a in areas])
def test_every_area_resolves_in_both_hemispheres(area):
    assert area_mask([area], ("L",)).sum() > 0
    assert area_mask([area], ("R",)).sum() > 0


def test_groups_are_disjoint_by_name_and_by_grayordinate():
    names = [a for areas in ROI_GROUPS.values() for a in areas]
    assert len(names) == len(set(names))
    masks = group_masks()
    assert set(masks) == set(ROI_GROUPS)
    assert all(m.shape == (N_GRAYORDINATES,) and m.dtype == bool for m in masks.values())
    assert np.sum(list(masks.values()), axis=0).max() == 1


def test_group_masks_hemispheres_and_read_only():
    both, left, right = group_masks(), group_masks(("L",)), group_masks(("R",))
    assert np.array_equal(both["early_visual"], left["early_visual"] | right["early_visual"])
    assert not (left["early_visual"] & right["early_visual"]).any()
    with pytest.raises(ValueError, match="read-only"):
        both["scene"][0] = True


def v1_only() -> np.ndarray:
    values = np.zeros(N_GRAYORDINATES)
    values[area_mask(["V1"])] = 1.0
    return values


def test_v1_only_map_is_all_early_visual():
    shares = roi_shares(v1_only()).set_index("group")
    assert list(shares.index) == [*ROI_GROUPS, "other"]
    assert shares.loc["early_visual", "share"] == pytest.approx(1.0)
    assert shares.loc["early_visual", "sum"] == pytest.approx(area_mask(["V1"]).sum())
    assert shares.drop("early_visual")["share"].sum() == 0.0
    assert shares.loc["early_visual", "n_grayordinates"] == area_mask(["V1", "V2", "V3", "V4"]).sum()
    assert shares.loc["early_visual", "label"] == "early visual"


def test_shares_sum_to_one_and_ignore_nan():
    rng = np.random.default_rng(0)
    values = rng.normal(size=N_GRAYORDINATES)
    values[rng.random(N_GRAYORDINATES) < 0.3] = np.nan
    shares = roi_shares(values)
    assert shares["share"].sum() == pytest.approx(1.0)
    finite = np.isfinite(values)
    assert shares["n_grayordinates"].sum() == finite.sum()  # NaN is not counted as a zero-valued grayordinate
    mv = group_masks()["dorsal_motion"] & finite
    row = shares.set_index("group").loc["dorsal_motion"]
    assert row["mean"] == pytest.approx(np.abs(values[mv]).mean())
    assert row["share"] == pytest.approx(np.abs(values[mv]).sum() / np.abs(values[finite]).sum())
    other = shares.set_index("group").loc["other"]
    assert other["n_grayordinates"] == (finite & ~np.any(list(group_masks().values()), axis=0)).sum()


def test_signed_sum_and_mean():
    values = np.full(N_GRAYORDINATES, np.nan)
    v1 = np.flatnonzero(area_mask(["V1"]))
    values[v1[:2]] = [3.0, -1.0]
    row = roi_shares(values, absolute=False).set_index("group").loc["early_visual"]
    assert (row["sum"], row["mean"], row["share"], row["n_grayordinates"]) == (2.0, 1.0, 1.0, 2)
    row = roi_shares(values).set_index("group").loc["early_visual"]
    assert (row["sum"], row["mean"]) == (4.0, 2.0)


def test_custom_groups_and_all_zero_map():
    shares = roi_shares(v1_only(), groups={"mt": ("MT",), "v1": ("V1",)}).set_index("group")
    assert list(shares.index) == ["mt", "v1", "other"]
    assert shares.loc["v1", "share"] == 1.0 and shares.loc["v1", "label"] == "v1"
    assert roi_shares(np.zeros(N_GRAYORDINATES))["share"].isna().all()


def test_roi_table_and_bar_chart():
    motion = np.zeros(N_GRAYORDINATES)
    motion[group_masks()["dorsal_motion"]] = 2.0
    motion[group_masks()["early_visual"]] = 0.5
    table = roi_table({"structure": v1_only(), "motion": motion})
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["structure", "motion"] and list(table.columns) == [*ROI_GROUPS, "other"]
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    assert table.loc["structure", "early_visual"] == pytest.approx(1.0)
    assert table.loc["motion", "dorsal_motion"] > table.loc["motion", "early_visual"] > 0

    fig = roi_bar_chart(table)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["structure", "motion"]
    assert list(fig.data[0].x) == [ROI_LABELS[k] for k in table.columns]
    assert "%{y:.1%}" in fig.data[0].hovertemplate
    assert fig.layout.barmode == "group" and fig.layout.yaxis.tickformat == ".0%"
    assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_lesion_mask_on_constructed_voxels():
    v1_left = np.flatnonzero(area_mask(["V1"], ("L",)))
    v1_right = np.flatnonzero(area_mask(["V1"], ("R",)))
    mt = np.flatnonzero(area_mask(["MT"]))
    outside = np.flatnonzero(~np.any(list(group_masks().values()), axis=0))
    voxels = np.array([v1_left[0], v1_right[0], mt[0], outside[0], -1, outside[-1]])

    assert lesion_mask(["early_visual"], voxels).tolist() == [True, True, False, False, False, False]
    assert lesion_mask(["early_visual"], voxels, ("L",)).tolist() == [True, False, False, False, False, False]
    assert lesion_mask(["MT"], voxels).tolist() == [False, False, True, False, False, False]
    assert lesion_mask(["dorsal_motion", "V1"], voxels).tolist() == [True, True, True, False, False, False]
    assert not lesion_mask([], voxels).any()


def test_apply_lesion_returns_a_copy():
    fmri = np.arange(12, dtype=np.float32).reshape(2, 2, 3) + 1
    before = fmri.copy()
    lesioned = apply_lesion(fmri, np.array([True, False, True]))
    assert np.array_equal(fmri, before)  # input untouched
    assert lesioned.dtype == np.float32
    assert (lesioned[..., [0, 2]] == 0).all() and np.array_equal(lesioned[..., 1], fmri[..., 1])

    tensor = torch.ones(4, 3)
    out = apply_lesion(tensor, np.array([False, True, False]))
    assert isinstance(out, torch.Tensor) and (tensor == 1).all()
    assert out[:, 1].eq(0).all() and out[:, [0, 2]].eq(1).all()


def test_errors():
    with pytest.raises(ValueError, match=r"values_91k: expected an array of shape \(91282,\).* got shape \(59412,\)"):
        roi_shares(np.zeros(59412))
    with pytest.raises(ValueError, match="values_91k: expected at least one finite value, got only NaN"):
        roi_shares(np.full(N_GRAYORDINATES, np.nan))
    with pytest.raises(ValueError, match="values_91k: expected finite values or NaN .* got 1 infinite"):
        roi_shares(np.where(np.arange(N_GRAYORDINATES) == 5, np.inf, 0.0))
    with pytest.raises(TypeError, match="values_91k: expected real numbers, got dtype bool"):
        roi_shares(np.zeros(N_GRAYORDINATES, bool))
    with pytest.raises(ValueError, match="groups: expected disjoint groups, got"):
        roi_shares(v1_only(), groups={"a": ("V1",), "b": ("V1", "V2")})
    with pytest.raises(ValueError, match="groups: 'other' is reserved"):
        roi_shares(v1_only(), groups={"other": ("V1",)})
    with pytest.raises(ValueError, match="'V9' is not a Glasser HCP-MMP1.0 area"):
        roi_shares(v1_only(), groups={"a": ("V9",)})
    with pytest.raises(ValueError, match="hemispheres: expected 'L' and/or 'R', got \\('left',\\)"):
        group_masks(("left",))
    with pytest.raises(ValueError, match="attributions: expected at least one decoder"):
        roi_table({})
    with pytest.raises(ValueError, match=r"attributions\['motion'\]: values_91k: expected an array of shape"):
        roi_table({"motion": np.zeros(10)})
    with pytest.raises(ValueError, match="table: expected decoders × groups shares"):
        roi_bar_chart(pd.DataFrame())

    voxels = np.array([0, 1, -1])
    with pytest.raises(
        ValueError, match=r"\['early visual'\] are neither ROI groups nor Glasser areas.*'early_visual'.*area_names"
    ):
        lesion_mask(["early visual"], voxels)
    with pytest.raises(TypeError, match="groups_or_areas: expected a list of names, got the string 'V1'"):
        lesion_mask("V1", voxels)
    with pytest.raises(
        TypeError, match="voxel_grayordinates: expected integer grayordinate indices, got dtype float64"
    ):
        lesion_mask(["V1"], voxels.astype(float))
    with pytest.raises(
        ValueError, match=r"voxel_grayordinates: expected indices in \[0, 91281\] or -1 .* got values in \[-2, 1\]"
    ):
        lesion_mask(["V1"], np.array([-2, 1]))
    with pytest.raises(
        ValueError, match=r"voxel_grayordinates: expected an array of shape \(n_voxels,\), got shape \(1, 3\)"
    ):
        lesion_mask(["V1"], voxels[None])
    with pytest.raises(
        ValueError, match=r"mask: expected one entry per voxel of fmri \(shape \(2, 4\).*got shape \(3,\)"
    ):
        apply_lesion(np.zeros((2, 4)), np.zeros(3, bool))
    with pytest.raises(TypeError, match="mask: expected a boolean array, got dtype int64"):
        apply_lesion(np.zeros((2, 3)), np.array([0, 1, 0]))
