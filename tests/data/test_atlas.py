"""pipelines.data.atlas: Glasser areas resolved by name, both hemispheres, on the 91k grayordinates."""

import numpy as np
import pytest

from pipelines.data import atlas, cifti


def test_sizes_match_the_reference_counts():
    # shared/reference/surfaces_and_app.md §3: V1 831 (L) / 787 (R), MT 58 / 42, FFC 151 / 167.
    assert atlas.area_mask(["V1"], ("L",)).sum() == 831
    assert atlas.area_mask(["V1"], ("R",)).sum() == 787
    assert atlas.area_mask(["MT"]).sum() == 100
    assert atlas.area_mask(["FFC"]).sum() == 318


def test_hemispheres_follow_the_grayordinate_axis():
    axis = cifti.hcp_91k_axis()
    left = atlas.area_mask(["V1"], ("L",))
    assert set(axis.name[left]) == {cifti.CORTEX_LEFT}
    assert set(axis.name[atlas.area_mask(["V1"], ("R",))]) == {cifti.CORTEX_RIGHT}


def test_union_and_names():
    both = atlas.area_mask(["MT", "MST"])
    assert both.sum() == atlas.area_mask(["MT"]).sum() + atlas.area_mask(["MST"]).sum()
    names = atlas.area_names()
    assert len(names) == 180 and {"V1", "MT", "PHA1", "TPOJ1"} <= set(names)


def test_unknown_names_are_errors_with_suggestions():
    with pytest.raises(ValueError, match=r"'V9' is not a Glasser HCP-MMP1.0 area; did you mean \["):
        atlas.area_mask(["V9"])
    with pytest.raises(ValueError, match=r"hemispheres: expected 'L' and/or 'R', got 'X'"):
        atlas.area_mask(["V1"], ("X",))
    assert not atlas.area_mask([]).any() and atlas.area_mask([]).dtype == np.bool_
