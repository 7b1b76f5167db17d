"""build-bundle on the tiny simulated subject: decoders trained for a few steps, random tiny teachers."""

from __future__ import annotations

import json

import numpy as np

from pipelines import bundle
from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips
from tests.features.conftest import tiny_backbones  # noqa: F401  (one definition, shared)
from tests.training.decoders.conftest import (  # noqa: F401
    built_bundle,
    decoder_cache,
    tiny_config,
    tiny_decoder_data,
    trained,
)


def test_the_bundle_opens_and_reconstructs_its_test_clips(built_bundle, tiny_decoder_data):  # noqa: F811
    pipeline = VideoReconstructionPipeline.from_pretrained(built_bundle, num_inference_steps=5)
    clips = load_bundle_clips(built_bundle)
    assert len(clips) == 4 and clips.category is not None and len(clips.captions) == 4
    test = tiny_decoder_data.splits["test"]
    np.testing.assert_array_equal(clips.fmri, test.fmri[:4])
    np.testing.assert_array_equal(clips.frames[:, 0], test.first_frames[:4])
    np.testing.assert_array_equal(clips.text, test.text[:4])  # the teacher features the decoders are scored on
    np.testing.assert_array_equal(clips.flows, test.flows[:4])
    out = pipeline(clips.fmri)
    size = pipeline.info.image_size  # the tiny VAE's 32 px; the ground truth keeps the movie's 64 px
    assert out.frames.shape == (*clips.frames.shape[:2], size, size, 3)
    assert pipeline.info.simulated and pipeline.info.data_key == tiny_decoder_data.dataset.key
    assert sorted(pipeline.decoders) == ["flow", "fmri-encoder", "motion", "semantic", "structure"]


def test_test_clips_in_float16_are_read_back_as_float32(tiny_decoder_data, tmp_path):  # noqa: F811
    import pytest

    bundle.save_test_clips(tiny_decoder_data, tmp_path, n_test=3, dtype="float16")
    clips = load_bundle_clips(tmp_path)
    test = tiny_decoder_data.splits["test"]
    assert clips.fmri.dtype == np.float32 and clips.flows.dtype == np.float32
    # the float16 rounding of the originals (numpy's own), and nothing else
    np.testing.assert_array_equal(clips.fmri, test.fmri[:3].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(clips.flows, test.flows[:3].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(clips.text, test.text[:3])  # the rest keeps its precision
    with pytest.raises(ValueError, match="dtype: expected 'float32' or 'float16', got 'int8'"):
        bundle.save_test_clips(tiny_decoder_data, tmp_path, dtype="int8")


def test_bundle_json_records_the_command_and_the_revision(built_bundle):  # noqa: F811
    manifest = json.loads((built_bundle / "bundle.json").read_text())
    (entry,) = manifest["provenance"]["commands"]
    assert entry["command"].startswith("python -m pipelines build-bundle --config tiny --data ")
    assert entry["command"].endswith("--n-test 4")
    revision = bundle.git_revision()
    assert entry["git_revision"] == revision["git_revision"] and isinstance(entry["git_dirty"], (bool, type(None)))
    assert manifest["weights_dtype"] == "float32"


def test_the_bundle_is_sealed_and_a_missing_or_altered_file_is_named(built_bundle, tmp_path):  # noqa: F811
    import hashlib
    import shutil

    import pytest

    files = json.loads((built_bundle / "bundle.json").read_text())["files"]
    assert {"test_clips.safetensors", "constants.safetensors", "decoders/semantic/model.safetensors"} <= set(files)
    assert "bundle.json" not in files
    for name, digest in files.items():  # independent reference: hashlib over the whole file
        assert hashlib.sha256((built_bundle / name).read_bytes()).hexdigest() == digest
    copy = shutil.copytree(built_bundle, tmp_path / "copy")
    weights = copy / "decoders" / "motion" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"altered: \['decoders/motion/model.safetensors'\]"):
        VideoReconstructionPipeline.from_pretrained(copy)
    (copy / "test_clips.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['test_clips.safetensors'\]"):
        VideoReconstructionPipeline.from_pretrained(copy)


def test_the_constants_come_from_the_training_split(built_bundle, tiny_decoder_data):  # noqa: F811
    pipeline = VideoReconstructionPipeline.from_pretrained(built_bundle)
    train = tiny_decoder_data.splits["train"]
    np.testing.assert_allclose(pipeline.constants["mean_fmri"].numpy(), train.fmri.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(pipeline.constants["mean_latent"].numpy(), train.latents[:, 0].mean(axis=0), atol=1e-5)
    np.testing.assert_array_equal(pipeline.voxel_grayordinates, tiny_decoder_data.dataset.voxel_grayordinates)
    manifest = json.loads((built_bundle / "bundle.json").read_text())
    assert manifest["info"]["simulated"] is True and manifest["info"]["window"] == train.fmri.shape[1]


def test_a_missing_required_decoder_is_named(tiny_twin, tiny_backbones, decoder_cache, tmp_path, capsys):  # noqa: F811
    argv = ["--config", "tiny", "--data", str(tiny_twin), "--backbones", str(tiny_backbones[0]), "--cache-dir",
            str(decoder_cache), "--decoders", str(tmp_path / "none"), "--out", str(tmp_path / "b")]  # fmt: skip
    assert bundle.main(argv) == 1
    assert "semantic does not exist; expected the trained semantic decoder" in capsys.readouterr().err
