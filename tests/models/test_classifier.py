"""pipelines.models.classifier: shapes, safetensors round trip, config errors."""

import pytest
import torch

from pipelines.models.classifier import FrameClassifier, FrameClassifierConfig


def test_forward_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FrameClassifier(FrameClassifierConfig(labels=("a", "b"), image_size=16, channels=(4, 8))).eval()
    x = torch.rand(3, 3, 16, 16)
    assert model(x).shape == (3, 2)
    model.save_pretrained(tmp_path / "m", meta={"steps": 5})
    assert (tmp_path / "m" / "model.safetensors").is_file() and not list((tmp_path / "m").glob("*.bin"))
    back = FrameClassifier.from_pretrained(tmp_path / "m")
    assert back.config == model.config
    torch.testing.assert_close(back(x), model(x))


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="labels: expected at least one class name, got none"):
        FrameClassifier(FrameClassifierConfig())
    with pytest.raises(
        FileNotFoundError, match="config.json does not exist; expected a folder written by save_pretrained"
    ):
        FrameClassifier.from_pretrained(tmp_path)
    FrameClassifier(FrameClassifierConfig(labels=("a",), channels=(4,))).save_pretrained(tmp_path / "x")
    (tmp_path / "x" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors does not exist"):
        FrameClassifier.from_pretrained(tmp_path / "x")
