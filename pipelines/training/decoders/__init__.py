"""Training of the stage-1 decoders: config, data with teacher features, stages, ridge baselines, evaluation."""
