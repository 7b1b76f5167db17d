"""Evaluation metrics and statistics (reference: ``methods_and_protocols.md`` section A)."""
