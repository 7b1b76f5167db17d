"""Data layer: video I/O, CIFTI I/O, preprocessing, dataset readers and the simulated subject."""
