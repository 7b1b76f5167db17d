"""brainviz: cortical-surface maps, attribution, attention, ROI tables and flow figures (built in later issues)."""
