"""``VideoReconstructionPipeline``: fMRI → decoded semantics, structure, motion and flow → video, with ablations and
virtual lesions.

One inference object over the stage-1 decoders of the three methods and the inflated renderer
(../shared/reference/methods_and_protocols.md C.1, C.4, C.5):

- semantics: Mind-Animator's ``SemanticDecoder`` (or NeuroCine's ``FMRIEncoder``) → the renderer's conditioning
  tokens;
- structure: Mind-Animator's ``StructureDecoder`` → the first frame's image latent;
- motion: Mind-Animator's ``ConsistencyMotionGenerator`` → the latents of every frame, from the first;
- flow: BrainNRDS's ``FlowDecoder`` → optical flow of the clip, from the fMRI window and the decoded first frame; the
  first latent moved along it (:func:`pipelines.models.sampling.animate`) is blended into the layout;
- render: the layout video is brought to the start timestep (fresh noise — NeuroCine's dependent noise — or DDIM
  inversion), then denoised with DDIM and classifier-free guidance by the inflated UNet, and decoded by the VAE.

Ablations follow the papers: semantic off → the unconditional (empty-caption) tokens; structure off → the mean
training latent; motion off → the first frame repeated; flow off → no flow blend; dependent noise off → β = 0.
A lesion sets the voxels of chosen grayordinates to their training mean before anything is decoded.

A bundle folder (``save_pretrained`` / ``from_pretrained``) holds everything the pipeline needs and nothing else:
``bundle.json`` (configs, provenance and, once sealed by ``build-bundle``, the SHA-256 of every other file, checked
on opening), ``constants.safetensors (voxel → grayordinate map, training-mean fMRI window, empty-caption tokens,
mean training latent), ``decoders/<stage>/``, ``renderer/`` (the inflated UNet) and ``vae/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pipelines import __version__
from pipelines.config import from_dict
from pipelines.models.registry import DECODERS
from pipelines.models.sampling import (
    SD_SCHEDULE,
    animate,
    ddim_invert,
    ddim_sample,
    dependent_noise,
    make_scheduler,
    renoise,
    start_timesteps,
)
from pipelines.models.video_unet import VideoUNet

ABLATIONS = ("semantic", "structure", "motion", "flow", "dependent_noise")
N_GRAYORDINATES = 91282  # HCP fsLR-32k CIFTI: cortex + subcortex
BUNDLE_FORMAT = 1
BUNDLE_JSON, CONSTANTS, TEST_CLIPS = "bundle.json", "constants.safetensors", "test_clips.safetensors"
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}  # how a bundle stores its model weights


@dataclass(frozen=True)
class ReconstructionConfig:
    """How a bundle renders (the defaults are the demo bundle's; ``__call__`` arguments override per call)."""

    conditioning: Literal["semantic", "fmri-encoder"] = "semantic"  # which decoder gives the renderer its tokens
    negative: Literal["empty", "mean-fmri"] = "empty"  # CFG's negative branch: empty caption, or MinD-Video's mean fMRI
    # how the layout reaches the start timestep: fresh noise (SDEdit), DDIM inversion, or "noise": no layout at all,
    # the whole schedule from pure noise (MinD-Video's non-decoupled rendering: the joint baseline)
    start: Literal["renoise", "invert", "noise"] = "renoise"
    start_timestep: int = 200  # Mind-Animator: t = 200
    num_inference_steps: int = 25  # DDIM schedule length; the steps ≤ start_timestep run (6 of 25; Mind-Animator: 50)
    guidance_scale: float = 3.0  # classifier-free guidance (Mind-Animator and MinD-Video: 12.5 with SD 1.5)
    noise_beta: float = 0.5  # NeuroCine dependent noise: shared variance between frames (0: independent)
    flow_weight: float = 0.5  # weight of the flow-animated first frame in the layout, frames ≥ 1
    # where the first frame moves along the decoded flow: the decoded first image, re-encoded by the VAE (DragNUWA
    # animates the image), or the first latent (cheaper, but a latent pixel is 8 image pixels wide)
    flow_space: Literal["pixel", "latent"] = "pixel"
    seed: int = 42  # Mind-Animator's generator seed
    schedule: dict[str, Any] = field(
        default_factory=lambda: dict(SD_SCHEDULE)
    )  # the renderer's training noise schedule


@dataclass(frozen=True)
class BundleInfo:
    """What the data side of a bundle is: the subject, its fMRI layout and the clip format."""

    dataset: str  # "cc2017", "hcp7t", "algonauts2021"
    subject: str
    simulated: bool  # True for the simulated subject: never present its numbers as human results
    n_voxels: int
    window: int  # TRs per fMRI input window
    centre: int  # index of the clip's own (HRF-shifted) volume in the window
    encoder_window: int  # TRs the fMRI encoder reads, centred on ``centre``
    n_frames: int  # frames per reconstructed clip
    fps: float
    image_size: int  # frames are (image_size, image_size, 3)
    flow_stride: int  # frames between the two ends of one decoded flow
    data_key: str = ""  # hash of the prepared data the decoders were trained on
    backbones: str = ""  # names of the teacher backbones


@dataclass
class ReconstructionOutput:
    """What :class:`VideoReconstructionPipeline` returns (numpy arrays, batch first)."""

    frames: np.ndarray  # (n_clips, n_frames, image_size, image_size, 3) uint8
    semantic_embedding: np.ndarray | None  # (n_clips, embed_dim): decoded CLIP-space embedding (None if ablated)
    semantic_tokens: np.ndarray  # (n_clips, n_tokens, token_dim): the conditioning the renderer used
    structure_latent: np.ndarray  # (n_clips, channels, h, w): first-frame latent used
    motion_latents: np.ndarray  # (n_clips, channels, n_frames, h, w): the layout video before rendering
    flow: np.ndarray | None  # (n_clips, n_flows, 2, grid, grid): decoded flow in grid pixels (None if no decoder)
    timings: dict[str, float]  # seconds per step
    ablated: tuple[str, ...]
    lesioned_voxels: int  # selected voxels the lesion set to their training mean


def check_ablate(ablate: Collection[str] | str | None) -> tuple[str, ...]:
    """Normalise ``ablate`` to a sorted tuple of names from :data:`ABLATIONS`."""
    if ablate is None:
        return ()
    if isinstance(ablate, str):
        ablate = [ablate]
    unknown = sorted(set(ablate) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"ablate: expected names from {list(ABLATIONS)}, got unknown {unknown}.")
    return tuple(sorted(set(ablate)))


def lesion_voxels(voxel_grayordinates: np.ndarray, lesion: Collection[int] | np.ndarray | None) -> np.ndarray:
    """Indices of the selected voxels whose grayordinate is in ``lesion`` (HCP 91k indices)."""
    if lesion is None:
        return np.zeros(0, dtype=np.int64)
    grayordinates = np.asarray(list(lesion) if not isinstance(lesion, np.ndarray) else lesion)
    if grayordinates.size and (
        not np.issubdtype(grayordinates.dtype, np.integer)
        or grayordinates.min() < 0
        or grayordinates.max() >= N_GRAYORDINATES
    ):
        raise ValueError(
            f"lesion: expected grayordinate indices in [0, {N_GRAYORDINATES}) (HCP fsLR-32k), got "
            f"{grayordinates.dtype} values in [{grayordinates.min()}, {grayordinates.max()}]."
        )
    return np.flatnonzero(np.isin(voxel_grayordinates, grayordinates))


@dataclass
class BundleClips:
    """The test clips a bundle ships: fMRI windows and the ground truth they were recorded with."""

    fmri: np.ndarray  # (n_clips, window, n_voxels) float32
    frames: np.ndarray  # (n_clips, n_frames, height, width, 3) uint8
    captions: list[str]
    category: np.ndarray | None  # (n_clips,) int: simulated category (None for real data)
    direction: np.ndarray | None  # (n_clips,) int: simulated motion-direction bin (None for real data)
    text: np.ndarray | None = None  # (n_clips, embed_dim): teacher CLIP embedding of each caption (retrieval)
    flows: np.ndarray | None = None  # (n_clips, n_flows, 2, grid, grid): teacher (RAFT) flows the flow decoder learns

    def __len__(self) -> int:
        return len(self.fmri)


def load_bundle_clips(directory: str | Path) -> BundleClips:
    """Read ``test_clips.safetensors`` of a bundle.

    Raises
    ------
    FileNotFoundError
        If the bundle ships no test clips.
    """
    from safetensors import safe_open

    path = Path(directory) / TEST_CLIPS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; expected the bundle's test clips (python -m pipelines build-bundle writes them)."
        )
    with safe_open(str(path), framework="np") as f:
        arrays = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        captions = json.loads((f.metadata() or {}).get("captions", "[]"))
    for key in ("fmri", "flows"):  # stored as float16 in small bundles (build-bundle --clips-dtype)
        if key in arrays:
            arrays[key] = arrays[key].astype(np.float32)
    return BundleClips(
        fmri=arrays["fmri"],
        frames=arrays["frames"],
        captions=captions,
        category=arrays.get("category"),
        direction=arrays.get("direction"),
        text=arrays.get("text"),
        flows=arrays.get("flows"),
    )


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_bundle(directory: str | Path) -> dict[str, str]:
    """Record the SHA-256 of every file of a bundle except ``bundle.json`` in its ``files`` entry.

    :meth:`VideoReconstructionPipeline.from_pretrained` then refuses a bundle whose listed files are missing or
    altered. ``build-bundle`` seals the bundle once its test clips are written.
    """
    directory = Path(directory)
    path = directory / BUNDLE_JSON
    manifest = json.loads(path.read_text())
    files = {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p != path and not p.name.endswith(".partial")
    }
    manifest["files"] = files
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(manifest, indent=2))
    partial.replace(path)
    return files


def verify_bundle(directory: str | Path, manifest: dict) -> None:
    """Check the files ``bundle.json`` lists against their SHA-256 (nothing to check for an unsealed bundle).

    Raises
    ------
    FileNotFoundError
        Naming every listed file that is missing.
    ValueError
        Naming every listed file whose content differs from what was sealed.
    """
    directory = Path(directory)
    files = manifest.get("files") or {}
    missing = [name for name in files if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}: bundle.json lists {len(files)} files; missing {missing}. Copy the whole bundle folder "
            "again (or rebuild it with build-bundle)."
        )
    altered = [name for name, digest in files.items() if file_sha256(directory / name) != digest]
    if altered:
        raise ValueError(
            f"{directory}: expected the files bundle.json lists with their recorded SHA-256; altered: {altered}. "
            "A changed file gives other reconstructions than the bundle's records: restore it or rebuild the bundle."
        )


class VideoReconstructionPipeline:
    """fMRI windows → reconstructed clips, through the stage-1 decoders and the inflated-diffusion renderer.

    Parameters
    ----------
    info : BundleInfo
    decoders : dict of str to nn.Module
        ``semantic``, ``structure``, ``motion`` (required), ``flow`` and ``fmri-encoder`` (optional).
    renderer : VideoUNet
        The inflated denoiser.
    vae : AutoencoderKL
        Decodes the renderer's latents, which are scaled by ``vae.config.scaling_factor``.
    constants : dict of str to tensor
        ``voxel_grayordinates`` (n_voxels,), ``mean_fmri`` (window, n_voxels), ``empty_tokens`` (n_tokens, dim),
        ``mean_latent`` (channels, h, w).
    config : ReconstructionConfig
    """

    REQUIRED = ("semantic", "structure", "motion")
    CONSTANTS = ("voxel_grayordinates", "mean_fmri", "empty_tokens", "mean_latent")

    def __init__(
        self,
        info: BundleInfo,
        decoders: dict[str, torch.nn.Module],
        renderer: VideoUNet,
        vae: AutoencoderKL,
        constants: dict[str, torch.Tensor],
        config: ReconstructionConfig | None = None,
    ):
        missing = [name for name in self.REQUIRED if name not in decoders]
        unknown = sorted(set(decoders) - set(DECODERS))
        if missing or unknown:
            raise ValueError(
                f"decoders: expected {list(self.REQUIRED)} and optionally 'flow', 'fmri-encoder'; "
                f"missing {missing}, unknown {unknown}."
            )
        absent = [name for name in self.CONSTANTS if name not in constants]
        if absent:
            raise ValueError(f"constants: expected {list(self.CONSTANTS)}, missing {absent}.")
        self.info = info
        self.decoders = {name: module.eval() for name, module in decoders.items()}
        self.renderer = renderer.eval()
        self.vae = vae.eval()
        self.constants = {name: torch.as_tensor(value) for name, value in constants.items()}
        self.config = config or ReconstructionConfig()
        self.tuning: dict | None = None  # set by from_pretrained when tune-bundle chose the settings
        if self.config.conditioning == "fmri-encoder" and "fmri-encoder" not in decoders:
            raise ValueError("config.conditioning is 'fmri-encoder' but the bundle has no fmri-encoder decoder.")
        self.voxel_grayordinates = self.constants["voxel_grayordinates"].numpy()

    # --- loading and saving -------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.renderer.parameters()).device

    def to(self, device: str | torch.device) -> VideoReconstructionPipeline:
        """Move every model (constants follow on use)."""
        for module in [*self.decoders.values(), self.renderer, self.vae]:
            module.to(device)
        return self

    def save_pretrained(self, directory: str | Path, weights_dtype: str = "float32") -> Path:
        """Write the bundle: ``bundle.json``, ``constants.safetensors``, ``decoders/``, ``renderer/``, ``vae/``.

        ``weights_dtype="float16"`` stores the models' floating-point weights at half precision (half the size; a
        shipped bundle must stay small). :meth:`from_pretrained` computes in float32 either way. The constants stay
        float32.
        """
        if weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights_dtype: expected one of {list(WEIGHT_DTYPES)}, got {weights_dtype!r}.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)

        def stored(module: torch.nn.Module) -> torch.nn.Module:
            if weights_dtype == "float32":
                return module
            import copy

            return copy.deepcopy(module).to(WEIGHT_DTYPES[weights_dtype])  # integer buffers keep their dtype

        for name, module in self.decoders.items():
            stored(module).save_pretrained(directory / "decoders" / name)
        stored(self.renderer).save_pretrained(directory / "renderer")
        stored(self.vae).save_pretrained(directory / "vae", safe_serialization=True)
        save_file({k: v.contiguous().cpu() for k, v in self.constants.items()}, directory / CONSTANTS)
        manifest = {
            "format": BUNDLE_FORMAT,
            "code_version": __version__,
            "info": asdict(self.info),
            "reconstruction": asdict(self.config),
            "decoders": sorted(self.decoders),
            "weights_dtype": weights_dtype,
        }
        if self.tuning is not None:
            manifest["tuning"] = self.tuning
        (directory / BUNDLE_JSON).write_text(json.dumps(manifest, indent=2))
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str = "cpu", **overrides: Any
    ) -> VideoReconstructionPipeline:
        """Open a bundle folder written by :meth:`save_pretrained`; ``overrides`` replace ReconstructionConfig fields.

        Raises
        ------
        FileNotFoundError
            If ``bundle.json`` or a part it lists is missing.
        ValueError
            For a bundle of another format version or an unknown override.
        """
        directory = Path(directory)
        path = directory / BUNDLE_JSON
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; expected a bundle folder (python -m pipelines build-bundle writes one; the "
                "demo bundle is assets/demo)."
            )
        manifest = json.loads(path.read_text())
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path}: expected bundle format {BUNDLE_FORMAT}, got {manifest.get('format')!r}.")
        verify_bundle(directory, manifest)
        info = from_dict(BundleInfo, manifest["info"], where=f"{path} (info)")
        config = from_dict(ReconstructionConfig, manifest["reconstruction"], where=f"{path} (reconstruction)")
        unknown = sorted(set(overrides) - set(ReconstructionConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"overrides: expected ReconstructionConfig fields, got unknown {unknown}.")
        config = replace(config, **overrides)
        stored = manifest.get("weights_dtype", "float32")
        if stored not in WEIGHT_DTYPES:
            raise ValueError(f"{path}: expected weights_dtype one of {list(WEIGHT_DTYPES)}, got {stored!r}.")
        decoders = {  # loading into float32 modules casts half-precision weights up
            name: DECODERS[name].from_pretrained(directory / "decoders" / name, device) for name in manifest["decoders"]
        }
        renderer = VideoUNet.from_pretrained(directory / "renderer", device=device).float()
        vae_dir = directory / "vae"
        if not vae_dir.is_dir():
            raise FileNotFoundError(f"{vae_dir} does not exist; expected the bundle's VAE (diffusers AutoencoderKL).")
        vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).to(device)
        constants_path = directory / CONSTANTS
        if not constants_path.is_file():
            raise FileNotFoundError(f"{constants_path} does not exist; expected the bundle's constants.")
        pipeline = cls(info, decoders, renderer, vae, load_file(constants_path), config)
        pipeline.tuning = manifest.get("tuning")  # how tune-bundle chose the settings (validation split), if it did
        return pipeline

    # --- inputs -------------------------------------------------------------------------------------------------

    def check_fmri(self, fmri: np.ndarray | torch.Tensor) -> torch.Tensor:
        """fMRI windows as a float32 tensor of shape (n_clips, window, n_voxels); one window may omit n_clips."""
        x = torch.as_tensor(np.asarray(fmri, dtype=np.float32) if not isinstance(fmri, torch.Tensor) else fmri)
        if x.ndim == 2:
            x = x[None]
        expected = (self.info.window, self.info.n_voxels)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"fmri: expected an array of shape (n_clips, {expected[0]}, {expected[1]}) (windows of "
                f"{expected[0]} TRs of this bundle's {expected[1]} selected voxels), got shape {tuple(x.shape)}."
            )
        if not torch.isfinite(x).all():
            raise ValueError("fmri: expected finite values, got NaN or infinity.")
        return x.float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (n, channels, h, w) → images (n, 3, image_size, image_size) in [0, 1]."""
        return (self.vae.decode(latents / self.vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2

    def encode_images(self, video: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, n_frames, h, w) in [0, 1] → scaled latents (n, channels, n_frames, h/8, w/8), the VAE's mean."""
        n, _, t = video.shape[:3]
        flat = video.permute(0, 2, 1, 3, 4).reshape(n * t, *video.shape[1:2], *video.shape[3:])
        latents = self.vae.encode(flat * 2 - 1).latent_dist.mean * self.vae.config.scaling_factor
        return latents.reshape(n, t, *latents.shape[1:]).permute(0, 2, 1, 3, 4)

    # --- the pipeline -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        fmri: np.ndarray | torch.Tensor,
        *,
        ablate: Collection[str] | str | None = None,
        lesion: Collection[int] | np.ndarray | None = None,
        seed: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        progress: bool = False,
    ) -> ReconstructionOutput:
        """Reconstruct one clip per fMRI window.

        Parameters
        ----------
        fmri : array of shape (n_clips, window, n_voxels) or (window, n_voxels)
            Preprocessed (z-scored) fMRI windows of the bundle's selected voxels, centred on each clip.
        ablate : names from ABLATIONS, optional
            Decoders (and renderer features) to switch off, as the papers' ablations do.
        lesion : grayordinate indices, optional
            HCP 91k grayordinates whose voxels are set to their training mean before decoding.
        seed, num_inference_steps, guidance_scale : optional
            Override the bundle's ReconstructionConfig for this call.
        progress : bool
            Show a progress bar over the denoising steps.

        Returns
        -------
        ReconstructionOutput

        Raises
        ------
        ValueError
            For fMRI of the wrong shape or non-finite values, unknown ablations, or out-of-range grayordinates.
        """
        c = self.config
        seed = c.seed if seed is None else seed
        steps = c.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = c.guidance_scale if guidance_scale is None else guidance_scale
        info, device, timings = self.info, self.device, {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now

        # 1. Check inputs; apply the lesion (voxels → their training mean).
        x = self.check_fmri(fmri)
        off = check_ablate(ablate)
        lesioned = lesion_voxels(self.voxel_grayordinates, lesion)
        mean_fmri = self.constants["mean_fmri"].float()
        if len(lesioned):
            x = x.clone()
            x[:, :, lesioned] = mean_fmri[:, lesioned]
        n = x.shape[0]
        x = x.to(device)
        volume = x[:, info.centre]
        half = info.encoder_window // 2
        encoder_input = x[:, info.centre - half : info.centre + half + 1]
        scheduler = make_scheduler(c.schedule)
        first_step = scheduler.config.num_train_timesteps - 1 if c.start == "noise" else c.start_timestep
        timesteps = start_timesteps(scheduler, steps, first_step)
        # separate streams, so switching one decoder off leaves the other draws (e.g. the noise) unchanged
        noise_generator = torch.Generator().manual_seed(seed)
        mask_generator = torch.Generator().manual_seed(seed + 1)
        lap("check")

        # 2. Decode semantics: the renderer's conditioning tokens (off: the empty caption's tokens).
        empty = self.constants["empty_tokens"].float().to(device)[None].expand(n, -1, -1)
        embedding = None
        if "semantic" in off:
            tokens = empty
        elif c.conditioning == "fmri-encoder":
            out = self.decoders["fmri-encoder"](encoder_input)
            embedding, tokens = out.embedding, out.conditioning
        else:
            out = self.decoders["semantic"](volume)
            embedding, tokens = out.embedding, out.tokens
        if c.negative == "mean-fmri":
            mean = mean_fmri.to(device)[None]
            if c.conditioning == "fmri-encoder":
                uncond = self.decoders["fmri-encoder"](
                    mean[:, info.centre - half : info.centre + half + 1]
                ).conditioning
            else:
                uncond = self.decoders["semantic"](mean[:, info.centre]).tokens
            uncond = uncond.expand(n, -1, -1)
        else:
            uncond = empty
        lap("semantic")

        # 3. Decode structure: the first frame's latent (off: the mean training latent).
        if "structure" in off:
            first = self.constants["mean_latent"].float().to(device)[None].expand(n, -1, -1, -1).contiguous()
        else:
            first = self.decoders["structure"](volume)
        lap("structure")

        # 4. Decode motion: latents of every frame from the first (off: the first frame repeated).
        if "motion" in off:
            layout = first[:, :, None].expand(-1, -1, info.n_frames, -1, -1).contiguous()
        else:
            motion = self.decoders["motion"].generate(first, volume, n_frames=info.n_frames, generator=mask_generator)
            layout = motion.permute(0, 2, 1, 3, 4).contiguous()  # (n, frames, c, h, w) → (n, c, frames, h, w)
        lap("motion")

        # 5. Decode flow from the window and the decoded first frame; blend the first latent moved along it.
        flow = None
        if "flow" in self.decoders:
            decoder = self.decoders["flow"]
            size = decoder.config.image_size
            decoded = self.decode_latents(first)
            first_image = F.interpolate(decoded, size=(size, size), mode="bilinear", align_corners=False)
            flow = decoder.expected_flow(decoder(x, first_image))
            if "flow" not in off and c.flow_weight > 0:
                if c.flow_space == "pixel":
                    moved = self.encode_images(animate(decoded, flow, info.n_frames, info.flow_stride))
                else:
                    moved = animate(first, flow, info.n_frames, info.flow_stride)
                w = c.flow_weight
                layout = torch.cat([layout[:, :, :1], (1 - w) * layout[:, :, 1:] + w * moved[:, :, 1:]], dim=2)
        lap("flow")

        # 6. Render: bring the layout to the start timestep, then denoise with DDIM and classifier-free guidance.
        beta = 0.0 if "dependent_noise" in off else c.noise_beta
        if c.start == "invert":
            start = ddim_invert(self.renderer, scheduler, layout, uncond, timesteps)
        else:
            noise = dependent_noise(tuple(layout.shape), beta, noise_generator, device)
            start = (
                noise * scheduler.init_noise_sigma
                if c.start == "noise"
                else renoise(scheduler, layout, noise, timesteps[0])
            )
        bar = tqdm(total=len(timesteps), desc="denoising", disable=not progress)
        latents = ddim_sample(
            self.renderer, scheduler, start, timesteps, tokens, uncond, guidance, callback=lambda i: bar.update()
        )
        bar.close()
        lap("render")

        # 7. Decode frames with the VAE.
        flat = latents.permute(0, 2, 1, 3, 4).reshape(-1, *latents.shape[1:2], *latents.shape[3:])
        images = self.decode_latents(flat)
        frames = (images * 255).round().byte().permute(0, 2, 3, 1).reshape(n, info.n_frames, *images.shape[2:], 3)
        lap("decode")

        return ReconstructionOutput(
            frames=frames.cpu().numpy(),
            semantic_embedding=None if embedding is None else embedding.float().cpu().numpy(),
            semantic_tokens=tokens.float().cpu().numpy(),
            structure_latent=first.float().cpu().numpy(),
            motion_latents=layout.float().cpu().numpy(),
            flow=None if flow is None else flow.float().cpu().numpy(),
            timings=timings,
            ablated=off,
            lesioned_voxels=int(len(lesioned)),
        )
