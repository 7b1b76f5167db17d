"""Training settings of the demo backbones: a role's options are only the settings that differ from the defaults."""

from pipelines.config import from_dict
from pipelines.training.backbones.config import BackboneTrainingConfig


def test_default_settings_add_no_options():
    config = BackboneTrainingConfig()
    assert all(config.options(role) == {} for role in ("clip", "frame_classifier", "vae", "unet", "raft"))


def test_clip_options_name_the_trainer_arguments():
    config = from_dict(
        BackboneTrainingConfig,
        {"clip_hard_negatives": True, "clip_corpus_runs": 3, "clip_negatives_per_pair": 11,
         "clip_selection": "retrieval+swap"},
    )  # fmt: skip
    assert config.options("clip") == {
        "hard_negatives": True, "corpus_runs": 3, "negatives_per_pair": 11, "selection": "retrieval+swap"
    }  # fmt: skip
    assert config.options("unet") == {}
    assert from_dict(BackboneTrainingConfig, {"clip_hard_negatives": True}).options("clip") == {"hard_negatives": True}


def test_classifier_options_name_the_trainer_arguments():
    config = from_dict(
        BackboneTrainingConfig, {"classifier_corpus_runs": 30, "classifier_colour": True, "classifier_blur": 1.5}
    )
    assert config.options("frame_classifier") == {"corpus_runs": 30, "colour": True, "blur": 1.5}
    assert config.options("clip") == {} and config.options("raft") == {}
    assert from_dict(BackboneTrainingConfig, {"classifier_blur": 1.0}).options("frame_classifier") == {"blur": 1.0}
