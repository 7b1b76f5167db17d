"""The stage-1 decoders by stage name: the one map from a trained stage's folder name to the class that loads it."""

from __future__ import annotations

from pipelines.models.brainnrds import FlowDecoder
from pipelines.models.mind_animator import ConsistencyMotionGenerator, SemanticDecoder, StructureDecoder
from pipelines.models.neurocine import FMRIEncoder

DECODERS: dict[str, type] = {
    "semantic": SemanticDecoder,
    "structure": StructureDecoder,
    "motion": ConsistencyMotionGenerator,
    "flow": FlowDecoder,
    "fmri-encoder": FMRIEncoder,
}
