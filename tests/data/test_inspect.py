"""`python -m pipelines inspect` on the tiny simulated subject."""

import json

import pytest

from pipelines.data.inspect import main

REQUIRED = (
    "n_train_clips",
    "n_val_clips",
    "n_test_clips",
    "n_selected_voxels",
    "selected_in_encoding_rois",
    "encoding_r_median",
)


@pytest.mark.slow
def test_inspect_json_on_the_tiny_twin(tiny_twin, tmp_path, capsys):
    assert main([str(tiny_twin), "--json", "--cache-dir", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in REQUIRED:
        assert key in summary, key
    # tiny: 4 segments (1 for validation) and 2 test runs of 16 clips; an HRF shift of 2 drops 2 clips per run
    assert (summary["n_train_clips"], summary["n_val_clips"], summary["n_test_clips"]) == (42, 14, 28)
    assert summary["n_selected_voxels"] == 4500 and summary["simulated"] is True
    assert 0.0 <= summary["selected_in_encoding_rois"] <= 1.0
    assert sum(summary["selected_by_role"].values()) == 4500
    assert -1.0 <= summary["encoding_r_median"] <= 1.0


@pytest.mark.slow
def test_inspect_text_labels_the_simulation(tiny_twin, tmp_path, capsys):
    assert main([str(tiny_twin), "--cache-dir", str(tmp_path), "selection.n_voxels=1000"]) == 0
    out = capsys.readouterr().out
    assert "n_selected_voxels" in out and "1000" in out
    assert "Simulated subject: these numbers describe the simulator, not human data." in out


def test_inspect_bad_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="stimuli does not exist; expected the CC2017 layout"):
        main([str(tmp_path)])
