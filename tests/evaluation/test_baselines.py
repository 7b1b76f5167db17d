"""The ridge baseline through the renderer, on the tiny simulated subject's bundle (decoders trained a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.evaluation import evaluate
from pipelines.evaluation.baselines import fit_ridge_decoders, ridge_baseline
from pipelines.reconstruct import VideoReconstructionPipeline, load_bundle_clips
from pipelines.training.decoders.evaluate import flatten
from pipelines.training.decoders.ridge import fit_ridge


@pytest.fixture(scope="module")
def ridge(built_bundle, tiny_decoder_data):
    pipeline = VideoReconstructionPipeline.from_pretrained(built_bundle, num_inference_steps=5)
    return pipeline, fit_ridge_decoders(tiny_decoder_data, pipeline.decoders["flow"].config.image_size, progress=False)


def test_ridge_decoders_answer_like_the_decoders(ridge, built_bundle):
    pipeline, decoders = ridge
    clips = load_bundle_clips(built_bundle)
    volume = torch.from_numpy(clips.fmri[:, pipeline.info.centre])
    with torch.no_grad():
        real = pipeline.decoders["semantic"](volume)
        fitted = decoders["semantic"](volume)
        assert fitted.tokens.shape == real.tokens.shape and fitted.embedding.shape[0] == len(volume)
        first = decoders["structure"](volume)
        assert first.shape == pipeline.decoders["structure"](volume).shape
        video = decoders["motion"].generate(first, volume, n_frames=pipeline.info.n_frames)
        assert video.shape == (len(volume), pipeline.info.n_frames, *first.shape[1:])
        torch.testing.assert_close(video[:, 0], first)  # frame 0 is the first latent, as the motion decoder's
        image = torch.rand(len(volume), 3, decoders["flow"].config.image_size, decoders["flow"].config.image_size)
        fmri = torch.from_numpy(clips.fmri)
        flows = decoders["flow"].expected_flow(decoders["flow"](fmri, image))
        assert flows.shape == pipeline.decoders["flow"].expected_flow(pipeline.decoders["flow"](fmri, image)).shape
    with pytest.raises(ValueError, match="n_frames: expected 1 to"):
        decoders["motion"].generate(first, volume, n_frames=99)


def test_the_structure_ridge_is_the_fit_evaluate_decoders_reports(ridge, tiny_decoder_data):
    _, decoders = ridge
    data = tiny_decoder_data
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    reference = fit_ridge(
        flatten(train.fmri[:, data.centre]), flatten(train.latents[:, 0]),
        flatten(val.fmri[:, data.centre]), flatten(val.latents[:, 0]),
    ).predict(flatten(test.fmri[:, data.centre]))  # fmt: skip
    with torch.no_grad():
        ours = decoders["structure"](torch.from_numpy(test.fmri[:, data.centre])).numpy()
    np.testing.assert_allclose(ours.reshape(len(ours), -1), reference, rtol=1e-4, atol=1e-5)


def test_the_ridge_pipeline_renders_and_leaves_the_bundle_alone(ridge, built_bundle):
    pipeline, decoders = ridge
    clips = load_bundle_clips(built_bundle)
    baseline = ridge_baseline(pipeline, decoders)
    out = baseline(clips.fmri[:2])
    assert out.frames.shape == (2, pipeline.info.n_frames, pipeline.info.image_size, pipeline.info.image_size, 3)
    assert baseline.decoders["semantic"] is decoders["semantic"] and "fmri-encoder" not in baseline.decoders
    assert type(pipeline.decoders["semantic"]).__name__ == "SemanticDecoder"  # the original keeps its decoders
    assert not np.array_equal(out.frames, pipeline(clips.fmri[:2]).frames)


def test_evaluate_with_data_reports_the_ridge_baseline(
    built_bundle, tiny_twin, tiny_backbones, decoder_cache, tmp_path
):
    common = ["--bundle", str(built_bundle), "--backbones", str(tiny_backbones[0]), "--limit", "3", "--baselines",
              "--batch-size", "2", "--set", "num_inference_steps=5"]  # fmt: skip
    data = ["--data", str(tiny_twin), "--config", "tiny", "--cache-dir", str(decoder_cache)]
    assert evaluate.main([*common, *data, "--out", str(tmp_path / "a")]) == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(results["baselines"]["ridge"]) == set(results["protocols"]["mind-animator"])
    assert evaluate.main([*common, "--out", str(tmp_path / "b")]) == 0  # without --data: said, not dropped
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert "pass --data" in results["baselines"]["ridge"]["unavailable"]
    assert "not measured" in (tmp_path / "b" / "results.md").read_text()


def test_evaluate_refuses_ridge_data_of_another_subject(built_bundle, tiny_backbones, tiny_decoder_data, tmp_path):
    import dataclasses

    other = dataclasses.replace(tiny_decoder_data, dataset=dataclasses.replace(tiny_decoder_data.dataset, key="other"))
    with pytest.raises(ValueError, match="expected the prepared data the bundle was trained on"):
        evaluate.evaluate_bundle(built_bundle, ["mind-animator"], tiny_backbones[0], tmp_path, limit=2, baselines=True,
                                 data=other)  # fmt: skip
