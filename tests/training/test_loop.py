"""pipelines.training.loop: the loss falls, the best validation weights are kept, an interrupted run resumes exactly;
batches reach the accelerator's device through to_device, wrapped models are reached through unwrap."""

from collections import namedtuple

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from pipelines.training.loop import LoopConfig, to_device, train, unwrap

W = torch.tensor([[2.0], [-1.0], [0.5]])


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))


def sample(rng):
    x = torch.from_numpy(rng.standard_normal((16, 3)).astype(np.float32))
    return x, x @ W


def loss_fn(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


X_VAL = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def validate(model):
    return float(torch.nn.functional.mse_loss(model(X_VAL), X_VAL @ W))


CONFIG = LoopConfig(steps=60, batch_size=16, lr=1e-2, warmup=5, eval_every=10)


def test_loss_falls_and_best_is_kept(tmp_path):
    before = validate(make_model().eval())
    model, result = train("toy", make_model(), sample, loss_fn, validate, CONFIG, tmp_path)
    assert result.best_score < 0.2 * before
    assert [h["step"] for h in result.history] == [10, 20, 30, 40, 50, 60]
    assert result.best_score == min(h["score"] for h in result.history)
    with torch.no_grad():
        assert validate(model) == pytest.approx(result.best_score)
    assert {p.name for p in tmp_path.iterdir()} == {
        "state.json",
        "last.safetensors",
        "best.safetensors",
        "optimizer.safetensors",
    }


def test_resume_gives_the_uninterrupted_result(tmp_path):
    straight, _ = train("toy", make_model(), sample, loss_fn, validate, CONFIG, tmp_path / "a")
    half = LoopConfig(**{**CONFIG.__dict__})
    calls = {"n": 0}

    def interrupted(model, batch):
        calls["n"] += 1
        if calls["n"] == 35:  # crash between checkpoints at steps 30 and 40
            raise KeyboardInterrupt
        return loss_fn(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train("toy", make_model(), sample, interrupted, validate, half, tmp_path / "b")
    resumed, result = train("toy", make_model(), sample, loss_fn, validate, half, tmp_path / "b")
    assert result.history[0]["step"] == 10 and len(result.history) == 6
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_resume_with_other_settings_is_refused(tmp_path):
    train("toy", make_model(), sample, loss_fn, validate, LoopConfig(steps=10, eval_every=5), tmp_path)
    with pytest.raises(ValueError, match="holds a checkpoint trained with"):
        train("toy", make_model(), sample, loss_fn, validate, LoopConfig(steps=20, eval_every=5), tmp_path)


Batch = namedtuple("Batch", ["fmri", "extras"])


def test_to_device_moves_every_tensor_and_keeps_the_containers():
    a, b, c = torch.ones(2), torch.zeros(3, 1), torch.arange(4)
    labels = np.arange(3)
    batch = (a, [b, {"c": c, "name": "clip", "n": 3, "labels": labels}], Batch(fmri=a, extras=(b, None)))
    moved = to_device(batch, "meta")  # a device every machine has; "cpu" would leave tensors where they are
    assert type(moved) is tuple and type(moved[1]) is list and type(moved[1][1]) is dict
    assert type(moved[2]) is Batch and type(moved[2].extras) is tuple
    tensors = [moved[0], moved[1][0], moved[1][1]["c"], moved[2].fmri, moved[2].extras[0]]
    assert all(t.device.type == "meta" for t in tensors)
    assert [t.shape for t in tensors] == [a.shape, b.shape, c.shape, a.shape, b.shape]
    assert moved[1][1]["c"].dtype == torch.int64
    assert moved[1][1]["name"] == "clip" and moved[1][1]["n"] == 3 and moved[1][1]["labels"] is labels
    assert moved[2].extras[1] is None
    assert a.device.type == "cpu"  # the input is left as it was


def test_to_device_of_a_bare_tensor_and_of_non_tensors():
    assert to_device(torch.ones(1), "meta").device.type == "meta"
    assert to_device(None, "meta") is None and to_device("text", "meta") == "text"
    assert to_device([], "meta") == [] and to_device({}, "meta") == {}


class Wrapper(torch.nn.Module):
    """Like DistributedDataParallel: the real model is ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_unwrap_reaches_the_wrapped_module():
    inner = torch.nn.Linear(2, 1)
    assert unwrap(Wrapper(inner)) is inner
    assert unwrap(inner) is inner


def test_an_explicit_cpu_accelerator_gives_the_default_result(tmp_path):
    seen = []

    def recording_loss(model, batch):
        seen.append(batch[0].device.type)
        return loss_fn(model, batch)

    default, default_result = train("toy", make_model(), sample, loss_fn, validate, CONFIG, tmp_path / "a")
    explicit, result = train(
        "toy", make_model(), sample, recording_loss, validate, CONFIG, tmp_path / "b", accelerator=Accelerator(cpu=True)
    )
    assert set(seen) == {"cpu"} and len(seen) == CONFIG.steps
    assert result.history == default_result.history
    assert (result.best_step, result.best_score) == (default_result.best_step, default_result.best_score)
    for a, b in zip(default.state_dict().values(), explicit.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert type(explicit) is torch.nn.Sequential and not explicit.training  # the plain model, not a wrapper


class TwoHeads(torch.nn.Module):
    """Two independent linear maps whose losses add up: each one's updates do not depend on the other's."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)


def two_heads_loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model.a(x), y) + torch.nn.functional.mse_loss(model.b(x), -y)


def _two_heads(tmp_path, lr: float, scale_b: float | None):
    model = TwoHeads()
    groups = None
    if scale_b is not None:
        groups = [{"params": model.a.parameters()}, {"params": model.b.parameters(), "lr_scale": scale_b}]
    config = LoopConfig(steps=30, batch_size=16, lr=lr, warmup=5, eval_every=10, grad_clip=0.0)
    trained, _ = train("toy", model, sample, two_heads_loss, lambda m: 0.0, config, tmp_path, params=groups)
    return trained  # validation is constant: the first checkpoint (step 10) is kept


def test_a_parameter_group_learns_at_its_lr_scale(tmp_path):
    grouped = _two_heads(tmp_path / "grouped", 1e-2, 0.5)
    full, half = _two_heads(tmp_path / "full", 1e-2, None), _two_heads(tmp_path / "half", 5e-3, None)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(grouped.a, name), getattr(full.a, name), rtol=0, atol=0)
        torch.testing.assert_close(getattr(grouped.b, name), getattr(half.b, name), rtol=1e-6, atol=1e-7)
    assert not torch.equal(grouped.b.weight, full.b.weight)


def test_a_run_with_parameter_groups_resumes_to_the_uninterrupted_result(tmp_path):
    config = LoopConfig(steps=40, batch_size=16, lr=1e-2, warmup=5, eval_every=10, grad_clip=0.0)

    def groups(model):
        return [{"params": model.a.parameters()}, {"params": model.b.parameters(), "lr_scale": 0.25}]

    def run(workdir, loss):
        model = TwoHeads()
        return train("toy", model, sample, loss, lambda m: float(m.a.bias), config, workdir, params=groups(model))

    straight, _ = run(tmp_path / "a", two_heads_loss)
    calls = {"n": 0}

    def interrupted(model, batch):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return two_heads_loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", interrupted)
    resumed, _ = run(tmp_path / "b", two_heads_loss)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"lr_scale": 0.0}, r"params\[1\]\['lr_scale'\]: expected a positive number, got 0.0"),
        ({"lr_scale": True}, r"params\[1\]\['lr_scale'\]: expected a positive number, got True"),
        ({"lr_scale": "0.1"}, r"params\[1\]\['lr_scale'\]: expected a positive number, got '0.1'"),
    ],
)
def test_bad_parameter_groups_are_refused(tmp_path, group, message):
    model = TwoHeads()
    groups = [{"params": model.a.parameters()}, {"params": model.b.parameters(), **group}]
    with pytest.raises(ValueError, match=message):
        train("toy", model, sample, two_heads_loss, lambda m: 0.0, CONFIG, tmp_path, params=groups)
    assert not (tmp_path / "state.json").exists()


def test_an_empty_parameter_group_is_refused(tmp_path):
    model = TwoHeads()
    groups = [{"params": model.a.parameters()}, {"params": [], "lr_scale": 0.5}]
    with pytest.raises(ValueError, match=r"params\[1\]: expected a parameter group with parameters, got none"):
        train("toy", model, sample, two_heads_loss, lambda m: 0.0, CONFIG, tmp_path, params=groups)
