"""pipelines.training.loop: the loss falls, the best validation weights are kept, an interrupted run resumes exactly."""

import numpy as np
import pytest
import torch

from pipelines.training.loop import LoopConfig, train

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
