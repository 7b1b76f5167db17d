"""Command line: ``python -m pipelines COMMAND [...]``; ``python -m pipelines COMMAND --help`` for each."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "simulate": ("pipelines.data.twin.simulate", "write a simulated subject in the CC2017 layout"),
    "inspect": ("pipelines.data.inspect", "run the CC2017 reader on a data set and summarise it"),
    "train-backbones": (
        "pipelines.training.backbones.train_all",
        "train the demo-tier backbones on a simulated subject",
    ),
    "evaluate-backbones": (
        "pipelines.training.backbones.evaluate_all",
        "measure the demo-tier backbones on test clips",
    ),
    "train-renderer": (
        "pipelines.training.renderer",
        "fine-tune the inflated renderer's temporal layers on training clips (NeuroCine)",
    ),
    "train": (
        "pipelines.training.decoders.train",
        "train one stage-1 decoder (--stage semantic, ...), or every step into a bundle (--preset demo --out DIR)",
    ),
    "evaluate-decoders": (
        "pipelines.training.decoders.evaluate",
        "measure the stage-1 decoders and their ridge baselines on test clips",
    ),
    "evaluate-references": (
        "pipelines.evaluation.references",
        "every protocol's metrics for ground truth, still and shuffled clips (ceiling and chance rows)",
    ),
    "evaluate": (
        "pipelines.evaluation.evaluate",
        "a bundle's reconstructions of its test clips under each paper's protocol, with decoder ablations",
    ),
    "tune-bundle": (
        "pipelines.evaluation.tune",
        "choose a bundle's rendering settings (flow weight, guidance, ...) on the validation split",
    ),
    "build-bundle": (
        "pipelines.bundle",
        "assemble a bundle (decoders, inflated renderer, constants, test clips) that the pipeline and app open",
    ),
    # brainviz sits downstream of pipelines (DESIGN.md); the dispatcher only names it and imports it on demand
    "attribution": (
        "brainviz.recovery",
        "Captum attribution of each decoder; on a simulated subject, recovery of its ground-truth roles",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m pipelines COMMAND [options]\n\ncommands:")
        width = max(map(len, COMMANDS))
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<{width}}  {text}")
        print("\nRun 'python -m pipelines COMMAND --help' for a command's options.")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; expected one of {sorted(COMMANDS)}.", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
