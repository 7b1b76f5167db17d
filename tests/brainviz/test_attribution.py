"""brainviz.attribution: Captum attributions checked against analytic cases, and each decoder's objective."""

import numpy as np
import pytest
import torch
from scipy import stats

from brainviz.attribution import (
    Attribution,
    InputCovariance,
    attribute,
    category_prototypes,
    decoder_objective,
    role_recovery_auc,
)
from pipelines.models.brainnrds import FlowDecoder, FlowDecoderConfig
from pipelines.models.mind_animator import (
    ConsistencyMotionGenerator,
    MotionGeneratorConfig,
    SemanticDecoder,
    SemanticDecoderConfig,
    StructureDecoder,
    StructureDecoderConfig,
)
from pipelines.models.neurocine import FMRIEncoder, FMRIEncoderConfig

V = 24  # voxels
RNG = np.random.default_rng(0)


def linear_objective(w):
    weights = torch.as_tensor(w, dtype=torch.float32)
    return lambda x: (x.flatten(1) * weights.flatten()).sum(dim=1)


def test_saliency_of_a_linear_objective_is_the_absolute_weight():
    w = RNG.standard_normal(V)
    result = attribute(linear_objective(w), RNG.standard_normal((3, V)), "saliency")
    np.testing.assert_allclose(result.values, np.abs(np.broadcast_to(w, (3, V))), rtol=1e-6)
    assert result.delta is None and result.method == "saliency"


def test_integrated_gradients_of_a_linear_objective_is_weight_times_input():
    w, x = RNG.standard_normal(V), RNG.standard_normal((3, V))
    result = attribute(linear_objective(w), x, "integrated_gradients", n_steps=8)
    np.testing.assert_allclose(result.values, w * x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.delta, 0.0, atol=1e-4)
    np.testing.assert_allclose(result.objective, x @ w, rtol=1e-5)


def test_integrated_gradients_uses_the_baseline():
    w, x, base = RNG.standard_normal(V), RNG.standard_normal((2, V)), RNG.standard_normal(V)
    result = attribute(linear_objective(w), x, "integrated_gradients", baseline=base, n_steps=4)
    np.testing.assert_allclose(result.values, w * (x - base), rtol=1e-4, atol=1e-5)


def test_completeness_holds_for_a_smooth_nonlinear_objective():
    """Σ attributions = f(x) − f(baseline) up to the reported delta, which shrinks with more steps."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(V, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    ref = torch.as_tensor(RNG.standard_normal((2, 8)), dtype=torch.float32)

    def objective(x):
        return torch.nn.functional.cosine_similarity(net(x), ref.repeat(x.shape[0] // 2, 1), dim=1)

    x = RNG.standard_normal((2, V))
    coarse = attribute(objective, x, "integrated_gradients", n_steps=2)
    fine = attribute(objective, x, "integrated_gradients", n_steps=64)
    with torch.no_grad():
        gap = (objective(torch.as_tensor(x, dtype=torch.float32)) - objective(torch.zeros(2, V))).numpy()
    np.testing.assert_allclose(fine.values.sum(axis=1) - gap, fine.delta, atol=1e-5)
    assert np.abs(fine.delta).max() < 1e-3 < np.abs(coarse.delta).max()


def test_pattern_of_a_linear_objective_is_the_covariance_times_the_weight():
    """Haufe's activation pattern Σw, with Σ from numpy's covariance of the training inputs."""
    w, train = RNG.standard_normal(V), RNG.standard_normal((50, V)) @ RNG.standard_normal((V, V))
    result = attribute(linear_objective(w), RNG.standard_normal((3, V)), "pattern", covariance=InputCovariance(train))
    expected = np.cov(train, rowvar=False) @ w
    np.testing.assert_allclose(result.values, np.broadcast_to(expected, (3, V)), rtol=1e-4, atol=1e-4)
    assert result.delta is None and result.method == "pattern"


def test_pattern_finds_the_signal_voxel_where_the_weights_do_not():
    """Haufe et al. 2014, fig. 1: voxel 0 = signal + noise, voxel 1 = the same noise alone. The optimal decoder
    (1, −1) weighs both equally; the pattern puts the signal on voxel 0 only."""
    signal, noise = RNG.standard_normal(20_000), RNG.standard_normal(20_000)
    train = np.stack([signal + noise, noise], axis=1)
    x = train[:4]
    saliency = attribute(linear_objective(np.array([1.0, -1.0])), x, "saliency")
    pattern = attribute(linear_objective(np.array([1.0, -1.0])), x, "pattern", covariance=InputCovariance(train))
    np.testing.assert_allclose(saliency.values, 1.0)
    np.testing.assert_allclose(pattern.values[:, 0], signal.var(ddof=1), rtol=0.05)
    np.testing.assert_allclose(pattern.values[:, 1], 0.0, atol=0.05)


def test_pattern_of_a_window_uses_the_window_covariance():
    train = RNG.standard_normal((30, 2, 5))
    w = RNG.standard_normal((2, 5))
    result = attribute(
        linear_objective(w), RNG.standard_normal((2, 2, 5)), "pattern", covariance=InputCovariance(train)
    )
    expected = (np.cov(train.reshape(30, -1), rowvar=False) @ w.ravel()).reshape(2, 5)
    np.testing.assert_allclose(result.values[1], expected, rtol=1e-4, atol=1e-5)


def test_voxel_map_sums_a_window_over_trs():
    values = RNG.standard_normal((2, 3, V)).astype(np.float32)
    result = Attribution(values, "integrated_gradients", np.zeros(2), None, 0.0)
    np.testing.assert_allclose(result.voxel_map(absolute=True), np.abs(values).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(result.voxel_map(absolute=False), values.sum(axis=1), rtol=1e-6)
    flat = Attribution(values[:, 0], "saliency", np.zeros(2), None, 0.0)
    np.testing.assert_array_equal(flat.voxel_map(), np.abs(values[:, 0]))


# ----------------------------------------------------------------------------------------------------------------------
# every decoder's objective


def tiny_models():
    torch.manual_seed(0)
    latent = (2, 4, 4)
    models = {
        "semantic": SemanticDecoder(
            SemanticDecoderConfig(n_voxels=V, embed_dim=8, n_blocks=1, head_dims=(16,), n_tokens=2, token_dim=4)
        ),  # fmt: skip
        "structure": StructureDecoder(StructureDecoderConfig(n_voxels=V, hidden_dim=16, latent_shape=latent)),
        "motion": ConsistencyMotionGenerator(
            MotionGeneratorConfig(
                n_voxels=V,
                latent_shape=latent,
                n_frames=4,
                d_model=16,
                n_heads=2,
                n_layers=1,
                ffn_dim=16,
                fmri_hidden=16,
                n_memory_tokens=2,
            )
        ),  # fmt: skip
        "flow": FlowDecoder(
            FlowDecoderConfig(
                n_voxels=V,
                window=3,
                fmri_hidden=16,
                fmri_dim=4,
                grid_size=4,
                image_size=16,
                stem_channels=(4, 4),
                position_channels=2,
                hidden_channels=8,
                n_blocks=1,
                n_flows=2,
                n_clusters=5,
            )
        ),  # fmt: skip
        "fmri-encoder": FMRIEncoder(
            FMRIEncoderConfig(
                n_voxels=V,
                window=3,
                patch_size=8,
                d_model=16,
                depth=1,
                n_heads=2,
                mlp_dim=16,
                embed_dim=8,
                n_cond_tokens=2,
                cond_dim=4,
            )
        ),  # fmt: skip
    }
    models["flow"].codebook.fit(RNG.standard_normal((200, 2)), seed=0)
    return models


def case(name):
    """(inputs, reference, first) for two samples."""
    if name == "semantic":
        return RNG.standard_normal((2, V)), RNG.standard_normal((2, 8)), None
    if name == "structure":
        return RNG.standard_normal((2, V)), RNG.standard_normal((2, 2, 4, 4)), None
    if name == "motion":
        latents = RNG.standard_normal((2, 4, 2, 4, 4))
        return RNG.standard_normal((2, V)), latents, None
    if name == "flow":
        frames = RNG.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
        return RNG.standard_normal((2, 3, V)), RNG.standard_normal((2, 2, 2, 4, 4)), frames
    return RNG.standard_normal((2, 3, V)), RNG.standard_normal((2, 8)), None


@pytest.mark.parametrize("name", ["semantic", "structure", "motion", "flow", "fmri-encoder"])
def test_each_decoder_objective_is_a_cosine_per_sample(name):
    model = tiny_models()[name]
    x, ref, first = case(name)
    objective = decoder_objective(name, model, ref, first=first)
    value = objective(torch.as_tensor(x, dtype=torch.float32))
    assert value.shape == (2,) and bool(((value >= -1 - 1e-6) & (value <= 1 + 1e-6)).all())
    result = attribute(objective, x, "saliency")
    assert result.values.shape == x.shape and np.isfinite(result.values).all() and (result.values > 0).any()


@pytest.mark.parametrize("name", ["motion", "flow"])
def test_held_fixed_inputs_follow_their_sample_through_integrated_gradients(name):
    """IG stacks the scaled copies of the whole batch; each copy must see its own sample's first latent / frame."""
    model = tiny_models()[name]
    x, ref, first = case(name)
    both = attribute(decoder_objective(name, model, ref, first=first), x, "integrated_gradients", n_steps=4,
                     internal_batch_size=None)  # fmt: skip
    for i in range(2):
        one = attribute(decoder_objective(name, model, ref[i : i + 1], first=None if first is None else first[i : i + 1]),
                        x[i : i + 1], "integrated_gradients", n_steps=4, internal_batch_size=None)  # fmt: skip
        np.testing.assert_allclose(both.values[i], one.values[0], rtol=1e-4, atol=1e-6)


def test_structure_objective_is_centred_on_the_output_at_the_baseline():
    model = tiny_models()["structure"].eval()
    with torch.no_grad():
        centre = model(torch.zeros(1, V))
        x = torch.as_tensor(RNG.standard_normal((1, V)), dtype=torch.float32)
        reference = (2 * (model(x) - centre) + centre).numpy()  # same direction from the centre
    assert decoder_objective("structure", model, reference)(x).item() == pytest.approx(1.0, abs=1e-5)


def test_category_prototypes_are_centred_class_means():
    embeddings, categories = RNG.standard_normal((30, 8)), np.arange(30) % 3
    prototypes = category_prototypes(embeddings, categories, 3)
    means = np.stack([embeddings[categories == k].mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(prototypes, means - means.mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected every category 0 to 3 at least once, got \[0, 1, 2\]"):
        category_prototypes(embeddings, categories, 4)
    with pytest.raises(
        ValueError, match=r"expected embeddings \(n, dim\) and categories \(n,\), got \(30, 8\) and \(29,\)"
    ):
        category_prototypes(embeddings, categories[:29], 3)


@pytest.mark.parametrize("name", ["semantic", "fmri-encoder"])
def test_category_objective_is_the_log_probability_of_the_category(name):
    model = tiny_models()[name].eval()
    with torch.no_grad():
        model.logit_scale.fill_(np.log(7.0))
    x, _, _ = case(name)
    prototypes, categories = RNG.standard_normal((3, 8)), np.array([2, 0])
    value = decoder_objective(name, model, categories, objective="category", prototypes=prototypes)(
        torch.as_tensor(x, dtype=torch.float32)
    )
    with torch.no_grad():  # independent reference in numpy
        f = model(torch.as_tensor(x, dtype=torch.float32)).embedding.double().numpy()
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (prototypes / np.linalg.norm(prototypes, axis=1)[:, None]).T
    logits = 7.0 * cos
    expected = logits[[0, 1], categories] - np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    both = attribute(decoder_objective(name, model, categories, objective="category", prototypes=prototypes), x,
                     "integrated_gradients", n_steps=4, internal_batch_size=None)  # fmt: skip
    for i in range(2):  # IG's stacked copies keep each sample's own category
        one = attribute(decoder_objective(name, model, categories[i : i + 1], objective="category",
                                          prototypes=prototypes), x[i : i + 1], "integrated_gradients", n_steps=4,
                        internal_batch_size=None)  # fmt: skip
        np.testing.assert_allclose(both.values[i], one.values[0], rtol=1e-4, atol=1e-6)


def test_category_objective_errors():
    models, prototypes = tiny_models(), RNG.standard_normal((3, 8))
    with pytest.raises(ValueError, match=r"objective: expected one of \['target', 'category'\], got 'object'"):
        decoder_objective("semantic", models["semantic"], np.zeros((1, 8)), objective="object")
    with pytest.raises(ValueError, match=r"objective 'category': expected one of the embedding decoders .* 'flow'"):
        decoder_objective("flow", models["flow"], np.zeros(1, int), objective="category", prototypes=prototypes)
    with pytest.raises(ValueError, match=r"objective 'category': expected prototypes= .* got None"):
        decoder_objective("semantic", models["semantic"], np.zeros(1, int), objective="category")
    for bad in (np.array([3]), np.array([-1]), np.zeros((1, 8)), np.array([0.5])):
        with pytest.raises(ValueError, match=r"objective 'category': expected one category index in 0 to 2 per input"):
            decoder_objective("semantic", models["semantic"], bad, objective="category", prototypes=prototypes)


# ----------------------------------------------------------------------------------------------------------------------
# role recovery AUC


def test_role_recovery_auc_matches_the_mann_whitney_statistic():
    scores, labels = RNG.standard_normal(200), RNG.random(200) < 0.3
    scores[labels] += 0.8
    u = stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert role_recovery_auc(scores, labels) == pytest.approx(u / (labels.sum() * (~labels).sum()))
    assert role_recovery_auc(labels.astype(float), labels) == 1.0


# ----------------------------------------------------------------------------------------------------------------------
# errors


def test_errors():
    model, w = tiny_models()["semantic"], RNG.standard_normal(V)
    with pytest.raises(ValueError, match="decoder: expected one of"):
        decoder_objective("vision", model, np.zeros((1, 8)))
    with pytest.raises(ValueError, match="method: expected one of"):
        attribute(linear_objective(w), np.zeros((1, V)), "gradcam")
    with pytest.raises(ValueError, match="with NaN or inf"):
        attribute(linear_objective(w), np.full((1, V), np.nan))
    with pytest.raises(ValueError, match=r"inputs: expected finite fMRI of shape"):
        attribute(linear_objective(w), np.zeros(V))
    with pytest.raises(ValueError, match="n_steps: expected a positive integer"):
        attribute(linear_objective(w), np.zeros((1, V)), "integrated_gradients", n_steps=0)
    with pytest.raises(ValueError, match=r"pattern: expected the training inputs' covariance .* got None"):
        attribute(linear_objective(w), np.zeros((1, V)), "pattern")
    with pytest.raises(ValueError, match=r"pattern: expected .* of shape \(24,\), got one of shape \(3,\)"):
        attribute(linear_objective(w), np.zeros((1, V)), "pattern", covariance=InputCovariance(np.eye(3)))
    with pytest.raises(ValueError, match=r"covariance inputs: expected finite training inputs .* got shape \(1, 24\)"):
        InputCovariance(np.zeros((1, V)))
    with pytest.raises(ValueError, match="with NaN or inf"):
        InputCovariance(np.full((3, V), np.nan))
    with pytest.raises(ValueError, match=r"gradients: expected shape \(batch, 3\) .* got \(2, 4\)"):
        InputCovariance(np.eye(3)).apply(np.zeros((2, 4)))
    x, ref, first = case("flow")
    with pytest.raises(ValueError, match="flow: expected the clips' first frames"):
        decoder_objective("flow", tiny_models()["flow"], ref)
    with pytest.raises(ValueError, match=r"first: expected one first frame per input \(2\), got 1"):
        decoder_objective("flow", tiny_models()["flow"], ref, first=first[:1])
    x, ref, _ = case("motion")
    with pytest.raises(ValueError, match=r"first: expected one reference per input \(2\)"):
        decoder_objective("motion", tiny_models()["motion"], ref, first=ref[:1, 0])
    with pytest.raises(ValueError, match="expected scores and labels of one shape"):
        role_recovery_auc(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(ValueError, match="scores: expected finite values"):
        role_recovery_auc(np.array([np.nan, 1.0]), np.array([True, False]))
    with pytest.raises(ValueError, match="voxels both in and out of the role"):
        role_recovery_auc(np.ones(3), np.ones(3, bool))
