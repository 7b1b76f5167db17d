"""pipelines.training.decoders.config (presets, paths, overrides, errors) and DecoderData's fMRI windows."""

import re

import numpy as np
import pytest
import yaml

from pipelines.config import preset_path
from pipelines.training.decoders.config import STAGE_CONFIGS, STAGES, DecodersConfig, load_decoders_config


def write(tmp_path, content: dict, name="decoders.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def test_preset_by_name_fills_every_stage():
    config = load_decoders_config("tiny")
    assert isinstance(config, DecodersConfig)
    assert list(config.stages) == list(STAGES)
    for name, stage in config.stages.items():
        assert isinstance(stage, STAGE_CONFIGS[name])
    assert config.stages["semantic"].loop.steps == 6 and config.stages["flow"].model.grid_size == 8
    assert config.data.hrf.mode == "window" and config.data.hrf.before == 2 and config.data.hrf.after == 2
    # the data section updates the cc2017 preset: keys the file leaves out keep the preset's values
    assert config.data.selection.n_voxels == 4500 and config.data.clips.fps == 4.0


def test_preset_by_path_equals_preset_by_name(tmp_path):
    assert load_decoders_config(preset_path("decoders", "tiny")) == load_decoders_config("tiny")
    copy = tmp_path / "copy.yml"
    copy.write_text(preset_path("decoders", "demo").read_text())
    assert load_decoders_config(copy) == load_decoders_config("demo")


def test_a_minimal_file_takes_the_dataclass_defaults(tmp_path):
    config = load_decoders_config(write(tmp_path, {"data": {"hrf": {"mode": "window"}}}))
    for name, cls in STAGE_CONFIGS.items():
        assert config.stages[name] == cls()


def test_overrides_reach_stages_and_data():
    config = load_decoders_config("tiny", ["semantic.loop.steps=7", "data.selection.n_voxels=100"])
    assert config.stages["semantic"].loop.steps == 7
    assert config.data.selection.n_voxels == 100
    tiny = load_decoders_config("tiny")
    assert config.stages["structure"] == tiny.stages["structure"]  # other stages untouched
    assert config.stages["semantic"].loop.batch_size == tiny.stages["semantic"].loop.batch_size


def test_unknown_section_is_rejected(tmp_path):
    path = write(tmp_path, {"data": {"hrf": {"mode": "window"}}, "semantics": {}})
    expected = f"{path}: unknown sections ['semantics']; expected 'data' and stages among {list(STAGES)}."
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_decoders_config(path)
    with pytest.raises(ValueError, match=re.escape("unknown sections ['flows']")):
        load_decoders_config("tiny", ["flows.loop.steps=3"])


@pytest.mark.parametrize(
    ("hrf", "got"),
    [
        ({"mode": "shift"}, "got mode='shift', before=2, after=2"),
        ({"mode": "window", "before": 1}, "got mode='window', before=1, after=2"),
        ({"mode": "window", "after": 0}, "got mode='window', before=2, after=0"),
    ],
)
def test_hrf_must_be_a_wide_enough_window(tmp_path, hrf, got):
    path = write(tmp_path, {"data": {"hrf": hrf}})
    with pytest.raises(
        ValueError,
        match=re.escape(f"{path}: data.hrf: expected mode 'window' with before >= 2 and after >= 2") + ".*" + got,
    ):
        load_decoders_config(path)


def test_the_default_hrf_mode_is_refused():
    # the cc2017 preset pairs each clip with one volume; the decoders need the window
    with pytest.raises(ValueError, match="got mode='shift'"):
        load_decoders_config("tiny", ["data.hrf.mode=shift"])


def test_unknown_key_inside_a_stage_names_the_file(tmp_path):
    path = write(tmp_path, {"data": {"hrf": {"mode": "window"}}, "motion": {"loop": {"stepz": 3}}})
    with pytest.raises(ValueError, match=re.escape(f"{path}: motion.loop: unknown key(s) ['stepz'] for LoopConfig")):
        load_decoders_config(path)
    path = write(tmp_path, {"data": {"hrf": {"mode": "window"}}, "flow": {"model": {"grid": 8}}}, "b.yaml")
    with pytest.raises(ValueError, match=re.escape(f"{path}: flow.model: unknown key(s) ['grid']")):
        load_decoders_config(path)


def test_a_wrongly_typed_value_names_the_file(tmp_path):
    path = write(tmp_path, {"data": {"hrf": {"mode": "window"}}, "structure": {"train": {"sparsify": "lots"}}})
    with pytest.raises(ValueError, match=re.escape(f"{path}: structure.train.sparsify: expected a number, got 'lots'")):
        load_decoders_config(path)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown decoders preset 'huge'; expected one of \['demo', 'tiny'\]"):
        load_decoders_config("huge")
    with pytest.raises(FileNotFoundError, match=re.escape(f"Config file {tmp_path / 'missing.yaml'} does not exist")):
        load_decoders_config(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------------------------------
# DecoderData.window / .volume on the tiny subject (prepared window of 5 TRs, centre 2)


def test_windows_are_centred_on_the_clip_volume(tiny_decoder_data):
    data = tiny_decoder_data
    assert data.centre == 2 and data.splits["train"].fmri.shape[1] == 5
    for split in ("train", "val", "test"):
        fmri, volume = data.splits[split].fmri, data.volume(split)
        assert volume.shape == (len(fmri), data.n_voxels)
        np.testing.assert_array_equal(data.window(split, 5), fmri)
        np.testing.assert_array_equal(data.window(split, 5)[:, 2], volume)
        np.testing.assert_array_equal(data.window(split, 3), fmri[:, 1:4])
        np.testing.assert_array_equal(data.window(split, 3)[:, 1], volume)
        np.testing.assert_array_equal(data.window(split, 1)[:, 0], volume)


@pytest.mark.parametrize("size", [4, 2, 0, 7, 9])
def test_window_sizes_must_be_odd_and_fit(tiny_decoder_data, size):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"window size: expected an odd number of TRs within the prepared window of 5 (centre 2), got {size}."
        ),
    ):
        tiny_decoder_data.window("train", size)


@pytest.mark.parametrize("size", [-1, -3])
def test_negative_window_sizes_are_rejected(tiny_decoder_data, size):
    with pytest.raises(ValueError, match="window size: expected an odd number of TRs"):
        tiny_decoder_data.window("train", size)
