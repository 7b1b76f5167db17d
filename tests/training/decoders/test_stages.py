"""pipelines.training.decoders.stages: the motion stage's warp-flow target and loss (the other stages train in
test_train.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.training.decoders.ridge import fit_ridge
from pipelines.training.decoders.stages import make_stage


def _motion(tiny_config, warp_grid: int, flow_weight: float):
    settings = tiny_config.stages["motion"]
    return replace(
        settings,
        model=replace(settings.model, warp_grid=warp_grid, dropout=0.0, attn_dropout=0.0, fmri_dropout=0.0),
        train=replace(settings.train, flow_weight=flow_weight),
    )


def test_teacher_warp_is_the_mean_flow_per_cell_in_latent_pixels_per_frame(tiny_config, tiny_decoder_data):
    data = tiny_decoder_data
    stage = make_stage("motion", _motion(tiny_config, 2, 1.0), data)
    index = np.arange(3)
    got = stage.teacher_warp("train", index).numpy()
    flows = data.splits["train"].flows[index].astype(np.float64)  # (n, n_flows, 2, grid, grid), grid px per stride
    grid, latent_width = flows.shape[-1], data.splits["train"].latents.shape[-1]
    half = grid // 2
    expected = np.zeros((3, 2, 2, 2))
    for i in range(2):  # numpy reference: mean over flows and over each quarter of the grid
        for j in range(2):
            cell = flows[..., i * half : (i + 1) * half, j * half : (j + 1) * half]
            expected[:, :, i, j] = cell.mean(axis=(1, 3, 4))
    expected *= latent_width / grid / data.flow_stride
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert stage.batch("train", index)[2].shape == (3, 2, 2, 2)
    assert len(make_stage("motion", _motion(tiny_config, 2, 0.0), data).batch("train", index)) == 2


def test_flow_weight_adds_the_warp_flow_error_to_the_loss(tiny_config, tiny_decoder_data):
    torch.manual_seed(0)
    weighted = make_stage("motion", _motion(tiny_config, 1, 3.0), tiny_decoder_data)
    plain = make_stage("motion", _motion(tiny_config, 1, 0.0), tiny_decoder_data)
    model = weighted.build().eval()  # eval: the inference mask, so both losses see the same attention
    torch.nn.init.normal_(model.flow.weight, std=0.01)
    index = np.arange(4)
    batch = weighted.batch("train", index)
    extra = F.mse_loss(model.clip_flow(batch[0]), batch[2])
    assert extra > 0
    torch.testing.assert_close(weighted.loss(model, batch), plain.loss(model, batch[:2]) + 3.0 * extra)


@pytest.mark.parametrize(
    ("warp_grid", "flow_weight", "message"),
    [
        (0, 1.0, r"motion.train.flow_weight: expected 0 without a warp \(motion.model.warp_grid = 0\), got 1.0"),
        (1, -1.0, "motion.train.flow_weight: expected >= 0, got -1.0"),
    ],
)
def test_flow_weight_errors(tiny_config, tiny_decoder_data, warp_grid, flow_weight, message):
    with pytest.raises(ValueError, match=message):
        make_stage("motion", _motion(tiny_config, warp_grid, flow_weight), tiny_decoder_data).build()


def test_epe_weight_adds_the_expected_flows_end_point_error(tiny_config, tiny_decoder_data):
    settings = tiny_config.stages["flow"]
    with_epe = replace(
        settings, model=replace(settings.model, dropout=0.0), train=replace(settings.train, epe_weight=2.0)
    )
    plain = replace(with_epe, train=replace(with_epe.train, epe_weight=0.0))
    torch.manual_seed(0)
    stage = make_stage("flow", with_epe, tiny_decoder_data)
    model = stage.build()
    stage.prepare(model)
    batch = stage.batch("train", np.arange(3))
    with torch.no_grad():
        logits = model(*batch[:2]).double().numpy()  # (n, n_flows, k, grid, grid)
        got, base = stage.loss(model, batch), make_stage("flow", plain, tiny_decoder_data).loss(model, batch)
    # numpy reference: softmax over clusters, probability-weighted centres, L2 distance per grid point, mean
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    decoded = np.einsum("bnkhw,kc->bnchw", p, model.codebook.centres.double().numpy())
    epe = np.linalg.norm(decoded - batch[2].double().numpy(), axis=2).mean()
    assert epe > 0
    np.testing.assert_allclose(float(got), float(base) + 2.0 * epe, rtol=1e-5)


@pytest.mark.parametrize(("name", "model_fields"), [("semantic", {"out_proj": True}), ("structure", None)])
def test_linear_readout_starts_at_the_ridge_baseline(tiny_config, tiny_decoder_data, name, model_fields):
    data = tiny_decoder_data
    if name == "structure":  # the ridge map's rank is at most the number of training clips: exactly representable
        model_fields = {"hidden_dim": len(data.splits["train"])}
    settings = tiny_config.stages[name]
    settings = replace(settings, model=replace(settings.model, linear_readout=True, **model_fields))
    stage = make_stage(name, settings, data)
    torch.manual_seed(0)
    model = stage.build()
    stage.prepare(model)
    target = {"semantic": lambda s: data.splits[s].text, "structure": lambda s: data.splits[s].latents[:, 0]}[name]
    flat = {s: target(s).reshape(len(target(s)), -1) for s in ("train", "val")}
    ridge = fit_ridge(data.volume("train"), flat["train"], data.volume("val"), flat["val"])
    model.eval()
    got = stage.embed(model, data.volume("test")) if name == "semantic" else stage.predict(model, data.volume("test"))
    np.testing.assert_allclose(got.reshape(len(got), -1), ridge.predict(data.volume("test")), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["fmri-encoder", "flow"])
def test_window_readout_starts_at_the_ridge_baseline_on_the_window(tiny_config, tiny_decoder_data, name):
    data = tiny_decoder_data
    settings = tiny_config.stages[name]
    # the ridge map's rank is at most the number of training clips: exactly representable at that rank
    settings = replace(settings, model=replace(settings.model, readout_rank=len(data.splits["train"])))
    stage = make_stage(name, settings, data)
    torch.manual_seed(0)
    model = stage.build()
    stage.prepare(model)
    target = {"fmri-encoder": lambda s: data.splits[s].text, "flow": lambda s: data.splits[s].flows}[name]
    window, flat = ({s: a(s).reshape(len(a(s)), -1) for s in ("train", "val", "test")} for a in (stage.inputs, target))
    ridge = fit_ridge(window["train"], flat["train"], window["val"], flat["val"])
    model.eval()
    if name == "flow":
        assert model.codebook.is_fitted
        with torch.no_grad():
            got = model.linear_flow(torch.from_numpy(stage.inputs("test").astype(np.float32))).numpy()
    else:
        got = stage.embed(model, stage.inputs("test"))
    np.testing.assert_allclose(got.reshape(len(got), -1), ridge.predict(window["test"]), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["flow", "fmri-encoder"])
def test_the_readout_learns_at_its_lr_scale(tiny_config, tiny_decoder_data, name):
    settings = tiny_config.stages[name]
    scaled = replace(settings, model=replace(settings.model, readout_rank=2),
                     train=replace(settings.train, readout_lr_scale=0.1))  # fmt: skip
    stage = make_stage(name, scaled, tiny_decoder_data)
    model = stage.build()
    rest, readout = stage.param_groups(model)
    assert readout["lr_scale"] == 0.1 and rest["lr_scale"] == 1.0
    assert [id(p) for p in readout["params"]] == [id(p) for p in model.readout_parameters()]
    assert sorted(id(p) for p in rest["params"] + readout["params"]) == sorted(id(p) for p in model.parameters())
    # the same rate for all, or no read-out: one group, every parameter at loop.lr
    full = replace(scaled, train=replace(scaled.train, readout_lr_scale=1.0))
    assert make_stage(name, full, tiny_decoder_data).param_groups(model) is None
    plain = make_stage(name, replace(scaled, model=replace(scaled.model, readout_rank=0)), tiny_decoder_data)
    assert plain.param_groups(plain.build()) is None
    assert make_stage("structure", tiny_config.stages["structure"], tiny_decoder_data).param_groups(model) is None


@pytest.mark.parametrize("scale", [0.0, -0.5, True])
def test_a_bad_readout_lr_scale_is_refused_by_name(tiny_config, tiny_decoder_data, scale):
    settings = tiny_config.stages["flow"]
    stage = make_stage(
        "flow", replace(settings, train=replace(settings.train, readout_lr_scale=scale)), tiny_decoder_data
    )
    with pytest.raises(ValueError, match=f"flow.train.readout_lr_scale: expected a positive number, got {scale!r}"):
        stage.param_groups(stage.build())
