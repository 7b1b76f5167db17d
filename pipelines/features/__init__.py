"""Teacher features: backbones in two tiers (full, demo) behind one interface, and cached feature extraction."""
