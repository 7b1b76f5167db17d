"""The simulated subject ("twin"): procedural stimuli with exact flow, and a brain on HCP grayordinates."""
