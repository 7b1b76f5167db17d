"""Training: loops that read top to bottom; models hold no training code."""
