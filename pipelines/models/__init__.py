"""Models: nn.Modules with a config dataclass and save/load. No optimizer, loss loop or file reading of data."""
