"""pipelines.evaluation.references on the tiny simulated subject with random-weight tiny backbones."""

import json

import numpy as np
import pytest

from pipelines.data.video import read_video
from pipelines.evaluation.protocols import load_protocol
from pipelines.evaluation.references import (
    REFERENCES,
    evaluate_references,
    ground_truth_clips,
    main,
    markdown,
    reference_videos,
)

PROTOCOL = """name: tiny
source: a test
n_frames: 4
fps: 4.0
resolution: 32
averaging: clip
metrics: [ssim, psnr, clip_pcc, vifi, epe, 2way_i]
clip_pcc: all_pairs
n_way_trials: 10
"""


@pytest.fixture
def protocol_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(PROTOCOL)
    return path


def test_test_videos_are_the_frames_shown_at_each_clip_time(tiny_twin, protocol_file):
    protocol = load_protocol(protocol_file, ["resolution=64"])  # the tiny movies are 64 x 64 at 8 fps, TR 2 s
    clips = ground_truth_clips(tiny_twin, protocol)
    assert clips.shape == (32, 4, 64, 64, 3) and clips.dtype == np.uint8  # 2 test movies x 16 TRs
    movie = read_video(tiny_twin / "stimuli" / "test2.mp4")  # independent: decode the whole movie
    np.testing.assert_array_equal(clips[16 + 3, 2], movie[3 * 16 + 2 * 2])  # clip 3 of test2, frame at 3 TR + 0.5 s
    small = ground_truth_clips(tiny_twin, load_protocol(protocol_file), limit=5)
    assert small.shape == (5, 4, 32, 32, 3)  # read at the protocol's resolution when it is below the movie's


def test_reference_videos():
    target = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4, 3), dtype=np.uint8)
    assert reference_videos("identity", target) is target
    static = reference_videos("static", target)
    assert (static == target[:, :1]).all() and static.shape == target.shape
    shuffled = reference_videos("shuffled", target, seed=3)
    sources = [next(j for j in range(5) if np.array_equal(shuffled[i], target[j])) for i in range(5)]
    assert sorted(sources) == list(range(5)) and all(s != i for i, s in enumerate(sources))  # a derangement
    with pytest.raises(
        ValueError, match=r"reference: expected one of \['identity', 'static', 'shuffled'\], got 'mean'"
    ):
        reference_videos("mean", target)
    with pytest.raises(ValueError, match=r"shuffled: expected at least 2 clips to shuffle, got 1"):
        reference_videos("shuffled", target[:1])


def test_evaluate_references_ceiling_and_chance(tiny_twin, tiny_backbones, protocol_file):
    results = evaluate_references(
        tiny_twin, [load_protocol(protocol_file)], tiny_backbones[0], limit=12, progress=False
    )
    assert results["simulated"] is True
    block = results["protocols"]["tiny"]
    assert block["n_clips"] == 12 and set(block["references"]) == set(REFERENCES)
    identity, static, shuffled = (block["references"][r] for r in REFERENCES)
    assert identity["ssim"]["mean"] == pytest.approx(1.0) and identity["epe"]["mean"] == 0.0
    assert identity["vifi"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert shuffled["ssim"]["mean"] < static["ssim"]["mean"] < 1.0
    assert static["clip_pcc"]["mean"] == pytest.approx(1.0, abs=1e-6)  # one frame repeated: all pairs identical
    assert identity["2way_i"]["mean"] is None  # the tiny classifier has 3 classes: 2-way needs 4
    assert set(block["backbones"]) == {"clip", "vifi", "frame_classifier"}
    table = markdown(results)
    assert table.startswith("Simulated subject (not human data).") and "2way_i (chance 0.750)" in table
    assert "| identity | 1.000 ± 0.000 | 100.000 ± 0.000 |" in table and "n/a" in table


def test_command_writes_json_and_markdown(tiny_twin, tiny_backbones, protocol_file, tmp_path, capsys):
    out = tmp_path / "refs"
    argv = ["--data", str(tiny_twin), "--backbones", str(tiny_backbones[0]), "--protocol", str(protocol_file)]
    assert main([*argv, "--limit", "4", "--set", "metrics=[psnr]", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "references.json").read_text())
    assert list(printed["protocols"]["tiny"]["references"]["static"]) == ["psnr"]
    assert (out / "references.md").read_text().startswith("Simulated subject")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--limit", "1"], r"--limit: expected at least 2 clips \(the shuffled reference needs 2\), got 1"),
        (["--protocol", "mindanimator"], r"Unknown protocols preset 'mindanimator'"),
        (["--set", "metrics=[lpips]"], r"unknown metric 'lpips'"),
    ],
)
def test_command_errors(tiny_twin, protocol_file, capsys, extra, message):
    argv = ["--data", str(tiny_twin), "--protocol", str(protocol_file), *extra]
    assert main(argv) == 1
    assert __import__("re").search(message, capsys.readouterr().err)


def test_command_missing_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nowhere"), "--protocol", "mindvideo", "--set", "metrics=[ssim]"]) == 1
    assert "nowhere" in capsys.readouterr().err
