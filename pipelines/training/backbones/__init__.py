"""Trainers of the demo-tier backbones, one module per role, each with ``train_<role>`` and ``evaluate_<role>``."""
