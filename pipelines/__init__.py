"""MindReel pipelines: data, features, models, training, reconstruction and evaluation."""

__version__ = "0.1.0"
