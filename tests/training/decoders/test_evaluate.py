"""python -m pipelines evaluate-decoders: the metrics on hand-built arrays, then all five stages end to end."""

import json
import math

import numpy as np
import pytest

from pipelines.training.decoders import evaluate
from pipelines.training.decoders.config import STAGES
from pipelines.training.decoders.evaluate import evaluate_decoders, motion_cosine
from pipelines.training.decoders.stages import caption_ranks

# ----------------------------------------------------------------------------------------------------------------------
# motion_cosine


def paths():
    """Two clips of 4 frames in 3-D: one moving at constant velocity, one wandering."""
    rng = np.random.default_rng(0)
    straight = np.arange(4)[:, None] * np.array([1.0, -2.0, 0.5])
    wandering = np.cumsum(rng.standard_normal((4, 3)), axis=0)
    return np.stack([straight, wandering])


def test_identical_motion_scores_one():
    target = paths()
    assert motion_cosine(target, target) == pytest.approx(1.0, abs=1e-12)
    # a shifted, scaled copy moves in the same direction at every step
    assert motion_cosine(3.0 * target + 7.0, target) == pytest.approx(1.0, abs=1e-12)


def test_reversed_motion_scores_minus_one():
    target = paths()
    mirrored = 2 * target[:, :1] - target  # every step goes the other way
    assert motion_cosine(mirrored, target) == pytest.approx(-1.0, abs=1e-12)


def test_orthogonal_and_static_motion_score_zero():
    target = np.zeros((1, 3, 2))
    target[0, :, 0] = [0.0, 1.0, 3.0]  # moves along x
    sideways = np.zeros((1, 3, 2))
    sideways[0, :, 1] = [0.0, -2.0, 1.0]  # moves along y
    assert motion_cosine(sideways, target) == pytest.approx(0.0, abs=1e-12)
    assert motion_cosine(np.ones_like(target), target) == 0.0  # no motion: no direction, no NaN


def test_mean_over_steps_and_clips():
    target = paths()
    predicted = target.copy()
    predicted[1] = 2 * target[1, :1] - target[1]  # clip 0 right (+1 per step), clip 1 reversed (-1 per step)
    assert motion_cosine(predicted, target) == pytest.approx(0.0, abs=1e-12)
    predicted = target.copy()
    predicted[0, 3] = predicted[0, 2] - (target[0, 3] - target[0, 2])  # one of the 6 steps reversed
    assert motion_cosine(predicted, target) == pytest.approx((5 - 1) / 6, abs=1e-12)


def test_frames_beyond_the_second_axis_are_flattened():
    rng = np.random.default_rng(1)
    target = rng.standard_normal((2, 3, 4, 2, 2))  # (n_clips, n_frames, channels, h, w)
    assert motion_cosine(target * 0.5 - 1.0, target) == pytest.approx(1.0, abs=1e-12)
    assert motion_cosine(-target, target) == pytest.approx(-1.0, abs=1e-12)


def test_order_is_applied_to_the_predicted_frames_only():
    target = paths()[:1]  # constant velocity: reversing time reverses every step
    backwards = target[:, ::-1]
    assert motion_cosine(backwards, target) == pytest.approx(-1.0, abs=1e-12)
    # taking the backwards frames in reverse order restores the motion; reordering both would give -1
    assert motion_cosine(backwards, target, order=np.array([3, 2, 1, 0])) == pytest.approx(1.0, abs=1e-12)
    assert motion_cosine(target, target, order=np.array([3, 2, 1, 0])) == pytest.approx(-1.0, abs=1e-12)


def test_motion_cosine_shape_errors():
    with pytest.raises(
        ValueError,
        match=r"motion_cosine: expected two arrays of one shape \(n_clips, n_frames, \.\.\.\), got \(2, 4, 3\) and "
        r"\(2, 5, 3\)",
    ):
        motion_cosine(np.zeros((2, 4, 3)), np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"got \(2, 4\) and \(2, 4\)"):
        motion_cosine(np.zeros((2, 4)), np.zeros((2, 4)))


# ----------------------------------------------------------------------------------------------------------------------
# caption_ranks

CAPTIONS = np.array(["a cat", "a dog", "a cat", "a bird"])
E = np.eye(3)
TEXT = np.stack([5 * E[0], E[1], 5 * E[0], 2 * E[2]])  # one text embedding per distinct caption, any norm


def test_a_perfect_predictor_ranks_zero_among_distinct_captions():
    ranks, n = caption_ranks(TEXT * np.array([[1.0], [3.0], [0.2], [1.0]]), CAPTIONS, TEXT)
    # the two "a cat" clips share one candidate: counted twice, it would tie with itself and rank 1
    assert n == 3
    np.testing.assert_array_equal(ranks, [0, 0, 0, 0])


def test_ranks_count_the_captions_more_similar_than_the_own_one():
    embeddings = np.stack([E[1] + 0.5 * E[0], E[1], -E[0], E[1] + 0.1 * E[2]])
    ranks, n = caption_ranks(embeddings, CAPTIONS, TEXT)
    # clip 0: dog above cat; clip 2: dog and bird (0) above cat (-1); clip 3: dog above bird
    np.testing.assert_array_equal(ranks, [1, 0, 2, 1])
    assert n == 3


def test_ties_count_against_the_prediction():
    embeddings = np.stack([E[0] + E[1], E[1] + E[2], np.ones(3), np.zeros(3)])
    ranks, _ = caption_ranks(embeddings, CAPTIONS, TEXT)
    # cat = dog; dog = bird; all three equal; a zero prediction is equally (dis)similar to every caption
    np.testing.assert_array_equal(ranks, [1, 1, 2, 2])


def test_a_nan_prediction_ranks_last_or_is_rejected():
    embeddings = TEXT.copy()
    embeddings[1] = np.nan
    try:
        ranks, n = caption_ranks(embeddings, CAPTIONS, TEXT)
    except ValueError:
        return  # rejecting non-finite predictions is a fine answer too
    assert ranks[1] == n - 1, f"expected a NaN prediction to rank last ({n - 1}), got rank {ranks[1]}"


# ----------------------------------------------------------------------------------------------------------------------
# end to end on the tiny simulated subject


@pytest.fixture(scope="module")
def evaluation(trained, tiny_config, tiny_decoder_data):
    """(results of evaluate_decoders, the row counts every ridge fit received)."""
    rows, fit = [], evaluate.fit_ridge

    def recording_fit(x_train, y_train, x_val, y_val, *args, **kwargs):
        rows.append((len(x_train), len(y_train), len(x_val), len(y_val)))
        return fit(x_train, y_train, x_val, y_val, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "fit_ridge", recording_fit)
        results = evaluate_decoders(trained, tiny_config, tiny_decoder_data)
    return results, rows


RETRIEVAL = ["top10", "top1", "chance_top10", "ridge_top10", "shuffled_fmri_top10", "beats_ridge", "target_met"]
RETRIEVAL += ["ridge_paired_p"]
MOTION = ["mse", "ridge_mse", "repeat_first_mse", "shuffled_fmri_mse", "shuffle_test", "shuffled_fmri_shuffle_test"]
PROMISED = {  # the keys the module docstring's table promises, per stage
    "semantic": RETRIEVAL,
    "fmri-encoder": RETRIEVAL,
    "structure": ["mse", "ridge_mse", "mean_latent_mse", "shuffled_fmri_mse", "ridge_paired_p"],
    "motion": [*MOTION, "ridge_shuffle_test", "ridge_paired_p", "pipeline", "target_met"],
    "flow": ["epe", "ridge_epe", "zero_epe", "shuffled_fmri_epe", "target_met", "ridge_paired_p"],
}


def test_ridge_paired_p_is_the_signed_rank_test_of_per_clip_scores():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    errors = rng.random((30, 2, 3))  # (clips, ...) errors of one method
    other = errors + rng.normal(0.05, 0.1, errors.shape)
    a, b = evaluate.per_clip(errors), evaluate.per_clip(other)
    np.testing.assert_allclose(a, errors.reshape(30, -1).mean(axis=1))
    assert evaluate.ridge_paired_p(a, b) == pytest.approx(wilcoxon(a, b).pvalue)
    assert evaluate.ridge_paired_p(a, a) == 1.0  # no differences, no evidence
    hits, ridge_hits = rng.random(40) < 0.5, rng.random(40) < 0.5  # top-10 hits: a sign test on discordant clips
    assert evaluate.ridge_paired_p(hits, ridge_hits) == pytest.approx(wilcoxon(hits * 1.0, ridge_hits * 1.0).pvalue)


def numbers(tree):
    """Every int or float leaf of a JSON-like tree (booleans excluded)."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in numbers(v)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def test_every_stage_reports_the_documented_metrics(evaluation, tiny_decoder_data):
    results, _ = evaluation
    assert results["simulated"] is True and results["split"] == "test"
    assert set(results) == {"simulated", "split", *STAGES}
    for stage, keys in PROMISED.items():
        missing = [k for k in keys if k not in results[stage]]
        assert not missing, f"{stage}: expected keys {keys}, missing {missing}"
        assert results[stage]["n_test_clips"] == len(tiny_decoder_data.splits["test"])
    for key in ("shuffle_test", "shuffled_fmri_shuffle_test", "ridge_shuffle_test"):
        test = results["motion"][key]
        assert test["metric"] == "latent_motion_cosine" and 0.0 <= test["p_mean"] <= 1.0 and test["p_std"] >= 0.0
    for key in ("motion_cosine", "shuffled_fmri_motion_cosine", "ridge_motion_cosine"):
        assert -1.0 <= results["motion"][key] <= 1.0
    path = results["motion"]["pipeline"]
    controls = ("shuffled_fmri", "generator_shuffled_fmri")
    for test in (path["shuffle_test"], path["ridge_shuffle_test"], *(path[k]["shuffle_test"] for k in controls)):
        assert test["metric"] == "latent_motion_cosine" and 0.0 <= test["p_mean"] <= 1.0
    n = path["n_fmri_shuffles"]
    for key in controls:
        cosines = np.array(path[key]["motion_cosines"])
        assert len(cosines) == n and cosines[0] == path[key]["motion_cosine"] == path[key]["shuffle_test"]["observed"]
        assert path[key]["fmri_permutation_p"] == pytest.approx(
            (1 + (cosines >= path["motion_cosine"]).sum()) / (1 + n)
        )
    met = path["shuffle_test"]["p_mean"] < 0.05 and max(path[k]["fmri_permutation_p"] for k in controls) < 0.05
    assert path["target_met"] == met == results["motion"]["target_met"]
    for stage in ("semantic", "fmri-encoder"):
        r = results[stage]
        assert 0.0 <= r["top1"] <= r["top10"] <= 1.0
        assert r["beats_ridge"] == (r["top10"] > r["ridge_top10"])
    for stage in STAGES:
        assert 0.0 <= results[stage]["ridge_paired_p"] <= 1.0
    flow = results["flow"]
    assert flow["target_met"] == (flow["epe"] < flow["zero_epe"] and flow["epe"] < flow["shuffled_fmri_epe"])
    values = numbers(results)
    assert values and all(math.isfinite(v) for v in values), f"expected finite metrics, got {values}"


def test_controls_match_independent_computations(evaluation, tiny_decoder_data):
    results, _ = evaluation
    data = tiny_decoder_data
    test, train = data.splits["test"], data.splits["train"]
    n = len(set(test.captions.tolist()))
    assert results["semantic"]["n_candidates"] == n
    assert results["semantic"]["chance_top10"] == pytest.approx(min(10, n) / n)
    assert results["semantic"]["chance_top1"] == pytest.approx(1 / n)
    assert results["flow"]["zero_epe"] == pytest.approx(np.linalg.norm(test.flows, axis=2).mean(), rel=1e-5)
    first = test.latents[:, :1]
    assert results["motion"]["repeat_first_mse"] == pytest.approx(np.mean((test.latents[:, 1:] - first) ** 2), rel=1e-5)
    mean_latent = train.latents[:, 0].mean(axis=0)
    assert results["structure"]["mean_latent_mse"] == pytest.approx(np.mean((test.latents[:, 0] - mean_latent) ** 2))


def test_ridge_baselines_are_fitted_on_train_and_val_rows(evaluation, tiny_decoder_data):
    _, rows = evaluation
    n_train, n_val = len(tiny_decoder_data.splits["train"]), len(tiny_decoder_data.splits["val"])
    assert rows == [(n_train, n_train, n_val, n_val)] * len(STAGES)


def test_evaluation_json_is_written_beside_the_decoders(evaluation, trained):
    results, _ = evaluation
    assert json.loads((trained / "evaluation.json").read_text()) == results


def test_table_has_one_row_per_metric(evaluation):
    table = evaluate._table(evaluation[0])
    assert table.splitlines()[0] == "| stage | metric | decoder | ridge | controls |"
    for row in ("| semantic | caption top-10", "| structure | latent MSE", "| motion | shuffle test p", "| flow | EPE",
                "| fmri-encoder | caption top-10"):  # fmt: skip
        assert row in table


def test_cli_json_gives_the_same_results(evaluation, trained, tiny_twin, tiny_backbones, decoder_cache, capsys):
    args = ["--decoders", str(trained), "--config", "tiny", "--data", str(tiny_twin), "--backbones",
            str(tiny_backbones[0]), "--cache-dir", str(decoder_cache), "--json"]  # fmt: skip
    assert evaluate.main(args) == 0
    assert json.loads(capsys.readouterr().out) == evaluation[0]


def test_cli_reports_an_empty_decoders_folder(tiny_twin, tiny_backbones, decoder_cache, tmp_path, capsys):
    empty = tmp_path / "no-decoders"
    empty.mkdir()
    args = ["--decoders", str(empty), "--config", "tiny", "--data", str(tiny_twin), "--backbones",
            str(tiny_backbones[0]), "--cache-dir", str(decoder_cache), "--json"]  # fmt: skip
    assert evaluate.main(args) == 1
    captured = capsys.readouterr()
    assert f"error: {empty}: expected at least one trained stage folder among" in captured.err
    assert captured.out == ""
    assert not (empty / "evaluation.json").exists()


def test_cli_needs_backbones_for_the_demo_tier(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--decoders", str(tmp_path), "--data", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--backbones is required with --tier demo" in capsys.readouterr().err


def test_evaluate_decoders_needs_a_trained_stage(tiny_config, tiny_decoder_data, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: expected at least one trained stage folder among"):
        evaluate_decoders(tmp_path, tiny_config, tiny_decoder_data)


def test_the_inference_path_starts_from_the_structure_decoder(evaluation, trained, tiny_config, tiny_decoder_data):
    """The motion shuffle test of the acceptance runs the generator from the first latent the structure decoder
    decodes from the clip's fMRI; its controls give another clip's fMRI to the whole path, or to the generator only."""
    from pipelines.models.registry import DECODERS
    from pipelines.training.decoders.stages import make_stage

    data, path = tiny_decoder_data, evaluation[0]["motion"]["pipeline"]
    latents, fmri = data.splits["test"].latents, data.volume("test")
    shuffle = np.random.default_rng(0).permutation(len(latents))  # evaluate_decoders' seed 0
    structure, motion = (DECODERS[s].from_pretrained(trained / s) for s in ("structure", "motion"))
    first = make_stage("structure", tiny_config.stages["structure"], data).predict(structure, fmri)
    stage = make_stage("motion", tiny_config.stages["motion"], data)
    assert path["first_frame"] == "structure decoder"
    for scored, volume, start in ((path, fmri, first), (path["shuffled_fmri"], fmri[shuffle], first[shuffle]),
                                  (path["generator_shuffled_fmri"], fmri[shuffle], first)):  # fmt: skip
        video = stage.predict(motion, volume, start)
        np.testing.assert_allclose(video[:, 0], start, atol=1e-6)  # generation keeps the frame it starts from
        assert scored["motion_cosine"] == pytest.approx(motion_cosine(video, latents), abs=1e-6)


def test_without_a_structure_decoder_the_inference_path_starts_from_ridge(trained, tiny_config, tiny_decoder_data):
    from pipelines.models.registry import DECODERS

    data = tiny_decoder_data
    assert evaluate.pipeline_first_latents(trained.parent / "nothing-here", tiny_config, data) is None
    result = evaluate.evaluate_stage(
        "motion", DECODERS["motion"].from_pretrained(trained / "motion"), tiny_config, data
    )
    assert result["pipeline"]["first_frame"] == "structure ridge"
    assert result["pipeline"]["ridge_shuffle_test"]["observed"] == pytest.approx(
        result["pipeline"]["ridge_motion_cosine"]
    )
