"""What a decoder training run reads from its config file: the data, and per stage the model, loop and loss settings.

One YAML file (``pipelines/configs/decoders/<preset>.yaml``) holds every stage, so the five ``train --stage`` runs of
a subject share their data settings. Model fields that follow from the data and the teachers (``n_voxels``,
``embed_dim``, ``n_tokens``, ``token_dim``, ``latent_shape``, ``n_frames``, ``image_size``, ``window``,
``n_flows``) are filled in by :func:`pipelines.training.decoders.stages.build_model`, not written in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from pipelines.config import from_dict, load_config, merge, parse_overrides, preset_path, read_yaml
from pipelines.data.cc2017 import CC2017Config
from pipelines.models.brainnrds import FlowDecoderConfig
from pipelines.models.mind_animator import MotionGeneratorConfig, SemanticDecoderConfig, StructureDecoderConfig
from pipelines.models.neurocine import FMRIEncoderConfig
from pipelines.training.loop import LoopConfig

STAGES = ("semantic", "structure", "motion", "flow", "fmri-encoder")


@dataclass(frozen=True)
class SemanticTraining:
    """Loss and augmentation of the semantic decoder (reference C.1)."""

    alpha: float = 0.5  # weight of InfoNCE(f, text) against InfoNCE(f, video) (code: 0.5)
    token_weight: float = 1.0  # weight of the conditioning-token MSE (code: 0.5)
    embedding_mse: float = 0.0  # weight of MSE(f, caption embedding), the code's main term (code: 1; paper: 0)
    soft_targets: float = 0.0  # > 0: SoftCLIP target temperature (NeuroClips); 0: hard InfoNCE (Mind-Animator)
    sparsify: float = 0.2  # fraction of fMRI entries picked, half of them zeroed (code: 0.2)


@dataclass(frozen=True)
class StructureTraining:
    """Loss and augmentation of the structure decoder (reference C.1)."""

    sparsify: float = 0.4  # code: 0.4
    l1_weight: float = 0.0  # weight of the L1 weight penalty (code: 4e-6 decaying per epoch; 0: off)


@dataclass(frozen=True)
class MotionTraining:
    """Loss and augmentation of the Consistency Motion Generator (reference C.1)."""

    sparsify: float = 0.0  # the code does not sparsify the CMG's fMRI
    l1_weight: float = 0.0  # code: 6e-7 decaying per epoch
    flow_weight: float = 0.0  # weight of the warp flow's MSE to the RAFT flow; needs model.warp_grid > 0 (not in code)


@dataclass(frozen=True)
class FlowTraining:
    """Teacher flows of the BrainNRDS flow decoder (reference C.4)."""

    stride: int = 2  # clip frames between the two frames of a flow: 8 frames per TR → (0,2), (2,4), (4,6) = 3 per TR
    codebook_vectors: int = 200_000  # training flow vectors k-means sees at most
    epe_weight: float = 0.0  # weight of the expected flow's end-point error beside the cross-entropy (paper: 0)
    readout_lr_scale: float = 1.0  # the linear flow's learning rate / loop.lr (model.readout_rank > 0; not in C.4)


@dataclass(frozen=True)
class EncoderTraining:
    """Augmentations and loss weights of the NeuroCine fMRI encoder (reference C.5)."""

    spatial_ratio: float = 0.25  # γ_spa: fraction of token positions masked
    temporal_ratio: float = 0.34  # γ_tem: fraction of the window's TRs interpolated (1 of 3)
    alpha: float = 0.5  # text against image weight in L_emb
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # (L_spa, L_tem, L_emb, conditioning MSE)
    readout_lr_scale: float = 1.0  # the linear read-out's learning rate / loop.lr (model.readout_rank > 0; not in C.5)


def _stage_config(name: str, model: type, train: type) -> type:
    """A frozen dataclass ``name`` with fields ``model``, ``loop`` (:class:`LoopConfig`) and ``train``."""
    fields = [(key, cls, field(default_factory=cls)) for key, cls in (("model", model), ("loop", LoopConfig),
                                                                        ("train", train))]  # fmt: skip
    return make_dataclass(name, fields, frozen=True)


# stage name → its config: the model's architecture, the loop's optimisation, the stage's loss and augmentation
STAGE_CONFIGS: dict[str, type] = {
    "semantic": _stage_config("SemanticStage", SemanticDecoderConfig, SemanticTraining),
    "structure": _stage_config("StructureStage", StructureDecoderConfig, StructureTraining),
    "motion": _stage_config("MotionStage", MotionGeneratorConfig, MotionTraining),
    "flow": _stage_config("FlowStage", FlowDecoderConfig, FlowTraining),
    "fmri-encoder": _stage_config("EncoderStage", FMRIEncoderConfig, EncoderTraining),
}


@dataclass(frozen=True)
class DecodersConfig:
    """A whole decoder config file."""

    data: CC2017Config  # the reader's settings: the cc2017 preset updated by the file's ``data`` section
    stages: dict[str, Any]  # stage name → its *Stage config


def load_decoders_config(source: str | Path, overrides: list[str] | None = None) -> DecodersConfig:
    """Read a decoder config file (a path, or a preset name of ``pipelines/configs/decoders``) and apply overrides.

    Overrides are ``KEY=VALUE`` with dotted keys from the file's top level, e.g. ``semantic.loop.steps=200`` or
    ``data.selection.n_voxels=3000``.

    Raises
    ------
    ValueError
        For an unknown top-level section, or any key or value the dataclasses reject (the message names the file).
    """
    path = Path(source) if Path(source).suffix in (".yaml", ".yml") else preset_path("decoders", str(source))
    raw = merge(read_yaml(path), parse_overrides(overrides))
    unknown = sorted(set(raw) - {"data", *STAGES})
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; expected 'data' and stages among {list(STAGES)}.")
    data = load_config(CC2017Config, merge(read_yaml(preset_path("data", "cc2017")), raw.get("data") or {}))
    if data.hrf.mode != "window" or data.hrf.before < 2 or data.hrf.after < 2:
        raise ValueError(
            f"{path}: data.hrf: expected mode 'window' with before >= 2 and after >= 2 (the flow decoder reads 5 TRs "
            f"around the clip's volume), got mode={data.hrf.mode!r}, before={data.hrf.before}, after={data.hrf.after}."
        )
    stages = {name: from_dict(cls, raw.get(name) or {}, where=f"{path}: {name}") for name, cls in STAGE_CONFIGS.items()}
    return DecodersConfig(data, stages)
