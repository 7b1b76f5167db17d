"""The app's computations, without Gradio: one object over a bundle that reconstructs a clip and explains it.

``app.py`` only lays out controls and turns errors into messages; everything it shows comes from here, so it can
be tested and scripted without a server:

- the clips: the bundle's test clips (fMRI window, ground-truth frames, caption, teacher RAFT flow), or a window
  cut from an uploaded CIFTI dense time series of the bundle's subject (:meth:`Workbench.upload_window`);
- the reconstruction with ablations and ROI virtual lesions, its metrics beside the intact reconstruction's
  (:meth:`Workbench.reconstruct`), and mp4 files of both videos;
- the decoded flow beside the RAFT flow of the ground truth, one colour normalisation (:meth:`Workbench.flow_figure`);
- per-decoder voxel attribution (Captum Saliency or IntegratedGradients) and the fMRI encoder's attention, as
  grayordinate maps, surface figures (fsLR-32k or fsaverage5) and ROI tables (:meth:`Workbench.brain_map`);
- the bundle's own evaluation (its ``results.json``, written by ``train --preset``) as a Markdown summary
  (:func:`results_markdown`).

Attribution objective in the app: the cosine of the decoded feature to the clip's ground-truth target (caption
embedding, first latent, latent changes, RAFT flow; brainviz.attribution) for test clips, and to the decoder's own
output for an uploaded run, which has no ground truth ("why did it decode this"). The category objective of the
recovery analysis needs the training captions, which a bundle does not ship.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from brainviz.attention import encoder_attention
from brainviz.attribution import attribute, decoder_objective
from brainviz.flow import flow_figure, flow_to_rgb
from brainviz.rois import ROI_GROUPS, ROI_LABELS, lesion_mask, roi_bar_chart, roi_table
from brainviz.surfaces import surface_figure, voxels_to_grayordinates
from pipelines.config import read_json
from pipelines.evaluation.metrics import end_point_error, psnr, ssim
from pipelines.reconstruct import (
    ABLATIONS,
    BundleClips,
    ReconstructionOutput,
    VideoReconstructionPipeline,
    load_bundle_clips,
)

MAP_KINDS = ("attribution", "attention")
ATTRIBUTION_METHODS = ("saliency", "integrated_gradients")
ATTENTION_MODES = ("rollout", "raw")
SPACES = ("fslr", "fsaverage5")
VIEWS = ("lateral", "medial", "ventral", "posterior")
RESULTS = "results.json"  # the bundle's own evaluation (pipelines.evaluation.evaluate), when it carries one
DISPLAY_SIZE = 256  # videos are upscaled (nearest neighbour) to about this many pixels for the browser


@dataclass
class ClipInput:
    """One clip to reconstruct: its fMRI window and, for a test clip, the ground truth."""

    fmri: np.ndarray  # (window, n_voxels) float32
    label: str
    index: int | None = None  # test-clip index, None for an uploaded run
    frames: np.ndarray | None = None  # (n_frames, h, w, 3) uint8 ground truth
    caption: str | None = None
    flow: np.ndarray | None = None  # (n_flows, 2, grid, grid) teacher (RAFT) flow of the ground truth
    text: np.ndarray | None = None  # (embed_dim,) teacher CLIP embedding of the caption


@dataclass
class ClipResult:
    """A reconstruction of one clip with what the app shows beside it."""

    clip: ClipInput
    output: ReconstructionOutput
    metrics: dict[str, float]  # this run's metrics against the ground truth (empty without one)
    intact: dict[str, float]  # the same metrics of the reconstruction without ablations or lesions
    ablated: tuple[str, ...]
    lesion: tuple[str, ...]
    lesioned_voxels: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)  # "reconstruction", "ground_truth": mp4 paths

    @property
    def change(self) -> dict[str, float]:
        """Metric change against the intact reconstruction (this run minus intact)."""
        return {k: self.metrics[k] - self.intact[k] for k in self.metrics if k in self.intact}


@dataclass
class BrainMap:
    """One cortical map with its figure and ROI summary."""

    kind: str  # "attribution" or "attention"
    decoder: str
    method: str  # attribution method or attention mode
    grayordinates: np.ndarray  # (91282,) float, NaN off the bundle's voxels
    figure: Any  # plotly Figure
    roi_table: pd.DataFrame  # rows: decoders shown; columns: ROI groups + other (shares)
    roi_chart: Any  # plotly Figure
    delta: float | None  # IntegratedGradients' mean |convergence delta|
    seconds: float
    title: str


DECODER_SUMMARY = (  # (key of results.json's decoders block, how results_markdown words it)
    ("semantic_retrieval_top10", "caption top-10 {semantic_retrieval_top10} (chance {semantic_retrieval_chance})"),
    ("flow_epe", "decoded flow EPE {flow_epe} (zero flow {flow_epe_zero}, another clip's fMRI {flow_epe_shuffled})"),
    ("category_acc", "category of the reconstructions {category_acc} (chance {category_chance})"),
    ("direction_agreement", "motion direction as the ground truth's {direction_agreement} (permutation null "
     "{direction_agreement_null_mean}, p {direction_agreement_p})"),
)  # fmt: skip


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "–"


def results_markdown(results: dict[str, Any]) -> str:
    """A short Markdown account of a bundle's evaluation (``results.json`` of ``python -m pipelines evaluate``): each
    protocol's means with chance where it has one, what the decoders recover, and the ablations that make the
    reconstructions significantly worse."""
    lines = []
    if results.get("simulated"):
        lines.append("**Simulated subject**: these numbers describe the simulation, not human data.")
    lines.append(f"Measured on the bundle's {results.get('n_clips', '?')} test clips (`results.json`).")
    for protocol, summary in results.get("protocols", {}).items():
        cells = []
        for metric, entry in summary.items():
            chance = f" (chance {_number(entry['chance'])})" if entry.get("chance") is not None else ""
            cells.append(f"{metric} {_number(entry.get('mean'))}{chance}")
        lines.append(f"- `{protocol}`: " + ", ".join(cells))
    decoders = results.get("decoders", {})
    values = defaultdict(lambda: "–", {key: _number(value) for key, value in decoders.items()})
    parts = [template.format_map(values) for key, template in DECODER_SUMMARY if key in decoders]
    if parts:
        lines.append("- decoders: " + "; ".join(parts))
    worse = {
        condition: [m for m, t in tests.items() if t.get("worse") and t.get("paired_p", 1.0) < 0.05]
        for condition, tests in results.get("ablation_tests", {}).items()
    }
    if worse:
        text = "; ".join(f"{c.removeprefix('no_')}: {', '.join(m) if m else 'nothing significant'}"
                         for c, m in worse.items())  # fmt: skip
        lines.append(f"- switching a decoder off makes these worse (paired p < 0.05): {text}")
    header = [line for line in lines if not line.startswith("- ")]
    return "\n\n".join(header) + "\n\n" + "\n".join(line for line in lines if line.startswith("- "))


def _upscale(frames: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    factor = max(1, size // max(frames.shape[1:3]))
    out = frames.repeat(factor, axis=1).repeat(factor, axis=2)
    h, w = out.shape[1] - out.shape[1] % 2, out.shape[2] - out.shape[2] % 2  # H.264 needs even sizes
    return np.ascontiguousarray(out[:, :h, :w])


def clip_metrics(frames: np.ndarray, target: np.ndarray, flow: np.ndarray | None, target_flow: np.ndarray | None):
    """SSIM (colour), PSNR and, where both flows exist, the decoded flow's EPE against the teacher flow."""
    out = {
        "ssim": float(ssim(frames[None], target[None]).mean()),
        "psnr": float(psnr(frames[None], target[None]).mean()),
    }
    if flow is not None and target_flow is not None:
        out["flow_epe"] = end_point_error(flow, target_flow, axis=-3)
    return out


class Workbench:
    """A bundle opened for exploration.

    Parameters
    ----------
    pipeline : VideoReconstructionPipeline
    clips : BundleClips
        The bundle's test clips.
    name : str
        What to call the bundle in titles.
    workdir : str or Path, optional
        Where mp4 and figure files go (default: a new folder under the system temp folder, which Gradio serves).
    """

    def __init__(
        self,
        pipeline: VideoReconstructionPipeline,
        clips: BundleClips,
        name: str = "bundle",
        workdir: str | Path | None = None,
        results: dict[str, Any] | None = None,
    ):
        if clips.fmri.shape[1:] != (pipeline.info.window, pipeline.info.n_voxels):
            raise ValueError(
                f"test clips: expected fMRI windows of shape (n, {pipeline.info.window}, {pipeline.info.n_voxels}) "
                f"like the bundle's decoders, got {clips.fmri.shape}."
            )
        self.pipeline, self.clips, self.name, self.results = pipeline, clips, name, results
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mindreel-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._intact: dict[tuple, tuple[ReconstructionOutput, dict[str, float]]] = {}
        self._cpu_decoders: dict[str, torch.nn.Module] = {}  # attribution runs on CPU copies (small models)
        self._counter = 0

    @classmethod
    def from_bundle(cls, directory: str | Path, device: str = "cpu", workdir: str | Path | None = None) -> Workbench:
        """Open a bundle folder (``build-bundle`` output); errors name the missing part."""
        pipeline = VideoReconstructionPipeline.from_pretrained(directory, device=device)  # checks the files' hashes
        path = Path(directory) / RESULTS
        results = read_json(path, "the bundle's evaluation as JSON") if path.is_file() else None
        return cls(pipeline, load_bundle_clips(directory), Path(directory).name, workdir, results)

    # --- what the bundle is -------------------------------------------------------------------------------------

    @property
    def simulated(self) -> bool:
        return bool(self.pipeline.info.simulated)

    @property
    def decoders(self) -> list[str]:
        return sorted(self.pipeline.decoders)

    def summary(self) -> str:
        """One paragraph on the bundle, in Markdown, with the simulated-subject label where it applies."""
        info = self.pipeline.info
        lines = []
        if info.simulated:
            lines.append(
                "**Simulated subject.** This bundle was trained on a simulated subject with known ground truth; "
                "what it shows describes the simulator and this code, not human data."
            )
        lines.append(
            f"Bundle `{self.name}`: {info.dataset} subject `{info.subject}`, {info.n_voxels} voxels, "
            f"{len(self.clips)} test clips of {info.n_frames} frames at {info.fps:g} fps "
            f"({info.image_size}×{info.image_size}); decoders: {', '.join(self.decoders)}."
        )
        return "\n\n".join(lines)

    def evaluation_summary(self) -> str | None:
        """The bundle's ``results.json`` in Markdown (None when the bundle carries no evaluation)."""
        return None if self.results is None else results_markdown(self.results)

    def clip_choices(self) -> list[tuple[str, int]]:
        """(label, index) of every test clip, for a dropdown."""
        return [(f"{i}: {c}" if c else f"clip {i}", i) for i, c in enumerate(self._captions())]

    def _captions(self) -> list[str]:
        n = len(self.clips)
        return list(self.clips.captions) if len(self.clips.captions) == n else [""] * n

    # --- inputs -------------------------------------------------------------------------------------------------

    def test_clip(self, index: int) -> ClipInput:
        """Test clip ``index`` of the bundle, with its ground truth."""
        n = len(self.clips)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
            raise ValueError(f"clip: expected a test-clip index in [0, {n - 1}], got {index!r}.")
        i, c = int(index), self.clips
        return ClipInput(
            fmri=np.asarray(c.fmri[i], np.float32),
            label=f"test clip {i}",
            index=i,
            frames=np.asarray(c.frames[i]),
            caption=self._captions()[i] or None,
            flow=None if c.flows is None else np.asarray(c.flows[i], np.float32),
            text=None if c.text is None else np.asarray(c.text[i], np.float32),
        )

    def upload_window(self, path: str | Path, tr: int) -> ClipInput:
        """The fMRI window around volume ``tr`` of an uploaded run of the bundle's subject.

        The run is read as a CIFTI-2 dense time series of 91,282 grayordinates, detrended and z-scored over time
        (CC2017's per-run preprocessing), and the bundle's voxels are taken by grayordinate. ``tr`` is the window's
        centre volume, the one that responds to the clip (already HRF-shifted). A single run is not averaged over
        repeats and is not standardised with the training statistics the test clips had, so it is noisier.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it is not a CIFTI dense time series, has the wrong grayordinate count, NaN or infinite values, lacks
            a voxel of the bundle, or ``tr`` leaves the window outside the run.
        """
        from pipelines.data import cifti, preprocess
        from pipelines.data.cc2017 import CC2017Config

        info = self.pipeline.info
        series = cifti.read_dtseries(path, min_volumes=info.window)
        first = int(tr) - info.centre if not isinstance(tr, bool) and float(tr) == int(tr) else None
        if first is None or first < 0 or first + info.window > series.n_trs:
            raise ValueError(
                f"TR: expected an integer volume in [{info.centre}, {series.n_trs - info.window + info.centre}] "
                f"(the centre of a {info.window}-TR window inside the run's {series.n_trs} volumes), got {tr!r}."
            )
        columns, _, _ = cifti.cortex_columns(series.axis)
        standard = cifti.standard_grayordinates(series.axis, columns)
        lookup = dict(zip(standard.tolist(), columns.tolist(), strict=True))
        wanted = self.pipeline.voxel_grayordinates
        missing = [int(g) for g in wanted if int(g) not in lookup]
        if missing:
            raise ValueError(
                f"{path}: expected the bundle's {len(wanted)} cortical grayordinates, found {len(missing)} missing "
                f"(first: {missing[:3]}); is it a run of the bundle's subject in HCP fsLR-32k space?"
            )
        data = series.data[:, [lookup[int(g)] for g in wanted]]
        data = preprocess.zscore(preprocess.polynomial_detrend(data, CC2017Config().detrend_order))
        window = np.nan_to_num(data[first : first + info.window]).astype(np.float32)  # flat voxels: z-score 0
        return ClipInput(fmri=window, label=f"{Path(path).name}, TR {int(tr)}")

    # --- reconstruction -----------------------------------------------------------------------------------------

    def lesion_grayordinates(self, groups: Collection[str]) -> np.ndarray:
        """HCP 91k grayordinates of the bundle's voxels in the named ROI groups or Glasser areas."""
        if not groups:
            return np.zeros(0, np.int64)
        mask = lesion_mask(list(groups), self.pipeline.voxel_grayordinates.astype(np.int64))
        return self.pipeline.voxel_grayordinates[mask].astype(np.int64)

    def reconstruct(
        self,
        clip: ClipInput,
        ablate: Collection[str] = (),
        lesion: Collection[str] = (),
        *,
        write_videos: bool = True,
    ) -> ClipResult:
        """Reconstruct ``clip`` with ``ablate`` (names of ABLATIONS) and ``lesion`` (ROI groups) switched off.

        The intact reconstruction of the same clip is computed once and cached, so the metric change of an ablation
        or lesion is shown against it.
        """
        ablate = tuple(sorted(set(ablate)))
        unknown = sorted(set(ablate) - set(ABLATIONS))
        if unknown:
            raise ValueError(f"ablations: expected names from {list(ABLATIONS)}, got unknown {unknown}.")
        lesion = tuple(sorted(set(lesion)))
        grayordinates = self.lesion_grayordinates(lesion)
        output = self.pipeline(clip.fmri, ablate=ablate, lesion=grayordinates)
        metrics = self._metrics(clip, output)
        key = (clip.label, hash(clip.fmri.tobytes()))
        if not ablate and not lesion:
            self._intact[key] = (output, metrics)
        elif key not in self._intact:
            base = self.pipeline(clip.fmri)
            self._intact[key] = (base, self._metrics(clip, base))
        result = ClipResult(
            clip=clip,
            output=output,
            metrics=metrics,
            intact=self._intact[key][1],
            ablated=ablate,
            lesion=lesion,
            lesioned_voxels=output.lesioned_voxels,
            seconds=float(sum(output.timings.values())),
        )
        if write_videos:
            result.files["reconstruction"] = self.write_video(output.frames[0], "reconstruction")
            if clip.frames is not None:
                result.files["ground_truth"] = self.write_video(clip.frames, "ground_truth")
        return result

    def _metrics(self, clip: ClipInput, output: ReconstructionOutput) -> dict[str, float]:
        if clip.frames is None:
            return {}
        flow = None if output.flow is None else output.flow[0]
        return clip_metrics(output.frames[0], clip.frames, flow, clip.flow)

    def write_video(self, frames: np.ndarray, stem: str) -> Path:
        """An H.264 mp4 of ``frames`` (n, h, w, 3) uint8, upscaled for display, in the work folder."""
        from pipelines.data.video import write_video

        self._counter += 1
        path = self.workdir / f"{stem}-{self._counter:05d}.mp4"
        return write_video(path, _upscale(np.asarray(frames, np.uint8)), self.pipeline.info.fps)

    def flow_figure(self, result: ClipResult) -> Figure | None:
        """Decoded flow beside the RAFT flow of the ground truth (one colour normalisation, EPE per frame); the
        decoded flow alone for an uploaded run; None if the bundle has no flow decoder."""
        if result.output.flow is None:
            return None
        decoded = result.output.flow[0]
        if result.clip.flow is not None:
            return flow_figure(decoded, result.clip.flow, titles=("decoded", "RAFT"))
        rgb = flow_to_rgb(decoded)
        fig = Figure(figsize=(1.6 * len(rgb), 1.9))
        for i, image in enumerate(rgb):
            ax = fig.add_subplot(1, len(rgb), i + 1)
            ax.imshow(image)
            ax.set_title(f"decoded {i}", fontsize=8)
            ax.axis("off")
        fig.suptitle("decoded flow (no ground truth for an uploaded run)", fontsize=9)
        return fig

    # --- maps ---------------------------------------------------------------------------------------------------

    def _decoder_inputs(self, decoder: str, fmri: np.ndarray) -> np.ndarray:
        info = self.pipeline.info
        x = np.asarray(fmri, np.float32)[None]
        if decoder in ("semantic", "structure", "motion"):
            return x[:, info.centre]
        if decoder == "fmri-encoder":
            half = info.encoder_window // 2
            return x[:, info.centre - half : info.centre + half + 1]
        return x

    def _decoder(self, name: str) -> torch.nn.Module:
        """The decoder on the CPU, where Captum runs here (a copy when the pipeline sits on a GPU)."""
        model = self.pipeline.decoders[name]
        if self.pipeline.device.type == "cpu":
            return model
        if name not in self._cpu_decoders:
            import copy

            self._cpu_decoders[name] = copy.deepcopy(model).cpu().eval()
        return self._cpu_decoders[name]

    def _objective(self, decoder: str, clip: ClipInput, inputs: np.ndarray):
        """The decoder's attribution objective: cosine to the ground truth (test clip) or to its own output."""
        p = self.pipeline
        model = self._decoder(decoder)
        x = torch.from_numpy(inputs)
        with torch.no_grad():
            first_latent = self._decoder("structure")(torch.from_numpy(self._decoder_inputs("structure", clip.fmri)))
            if decoder in ("semantic", "fmri-encoder"):
                reference = model(x).embedding.numpy() if clip.text is None else clip.text[None]
                return decoder_objective(decoder, model, reference)
            if decoder == "structure":
                reference = model(x) if clip.frames is None else self._true_latents(clip)[:, 0]
                return decoder_objective(decoder, model, np.asarray(reference))
            if decoder == "motion":
                if clip.frames is None:
                    reference = model.generate(first_latent, x).numpy()
                    return decoder_objective(decoder, model, reference, first=first_latent.numpy())
                latents = self._true_latents(clip)
                return decoder_objective(decoder, model, latents, first=latents[:, 0])
            size = model.config.image_size
            decoded = p.decode_latents(first_latent.to(p.device)).cpu()
            image = F.interpolate(decoded, size=(size, size), mode="bilinear")
            first = (image.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            reference = model.expected_flow(model(x, image)).numpy() if clip.flow is None else clip.flow[None]
            return decoder_objective(decoder, model, reference, first=first)

    def _true_latents(self, clip: ClipInput) -> np.ndarray:
        """The ground truth's VAE latents, (1, n_frames, channels, h, w), as the decoders' targets."""
        video = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(3, 0, 1, 2)[None].float() / 255
        with torch.no_grad():
            latents = self.pipeline.encode_images(video.to(self.pipeline.device))
        return latents.permute(0, 2, 1, 3, 4).cpu().numpy()

    def voxel_map(self, kind: str, decoder: str, clip: ClipInput, method: str) -> tuple[np.ndarray, float | None]:
        """Per-voxel map (n_voxels,) of one decoder for one clip, and IG's mean |delta| (else None)."""
        if kind not in MAP_KINDS:
            raise ValueError(f"map: expected one of {list(MAP_KINDS)}, got {kind!r}.")
        if decoder not in self.pipeline.decoders:
            raise ValueError(f"decoder: expected one of this bundle's decoders {self.decoders}, got {decoder!r}.")
        if kind == "attention":
            if decoder != "fmri-encoder":
                raise ValueError(f"attention: only the fmri-encoder has attention weights, got decoder {decoder!r}.")
            if method not in ATTENTION_MODES:
                raise ValueError(f"attention mode: expected one of {list(ATTENTION_MODES)}, got {method!r}.")
            model = self._decoder(decoder)
            with torch.no_grad():
                values = encoder_attention(model, self._decoder_inputs(decoder, clip.fmri), method)
            return values[0], None
        if method not in ATTRIBUTION_METHODS:
            raise ValueError(f"attribution method: expected one of {list(ATTRIBUTION_METHODS)}, got {method!r}.")
        inputs = self._decoder_inputs(decoder, clip.fmri)
        result = attribute(self._objective(decoder, clip, inputs), inputs, method, n_steps=32)
        delta = None if result.delta is None else float(np.abs(result.delta).mean())
        return result.voxel_map(absolute=True)[0], delta

    def brain_map(
        self,
        clip: ClipInput,
        *,
        kind: str = "attribution",
        decoder: str = "semantic",
        method: str = "saliency",
        space: str = "fslr",
        view: str = "lateral",
        roi_decoders: Collection[str] | None = None,
    ) -> BrainMap:
        """A surface map of one decoder's attribution (or the encoder's attention) for ``clip``, with the ROI
        shares of ``roi_decoders`` (default: every decoder, Saliency) beside it."""
        import time

        if space not in SPACES:
            raise ValueError(f"space: expected one of {list(SPACES)}, got {space!r}.")
        if view not in VIEWS:
            raise ValueError(f"view: expected one of {list(VIEWS)}, got {view!r}.")
        start = time.perf_counter()
        values, delta = self.voxel_map(kind, decoder, clip, method)
        grayordinates = voxels_to_grayordinates(values, self.pipeline.voxel_grayordinates)
        label = "attention" if kind == "attention" else "|attribution|"
        title = f"{decoder}: {label} ({method.replace('_', ' ')}), {clip.label}"
        if self.simulated:
            title += " — simulated subject"
        figure = surface_figure(grayordinates, space=space, view=view, signed=False, title=title, colorbar_title=label)
        maps = {f"{decoder} ({'attention' if kind == 'attention' else method})": grayordinates}
        for name in self.decoders if roi_decoders is None else roi_decoders:
            if name == decoder and kind == "attribution" and method == "saliency":
                continue
            saliency, _ = self.voxel_map("attribution", name, clip, "saliency")
            maps[f"{name} (saliency)"] = voxels_to_grayordinates(saliency, self.pipeline.voxel_grayordinates)
        table = roi_table(maps)
        chart = roi_bar_chart(table, title=f"Share per ROI group, {clip.label}")
        return BrainMap(
            kind, decoder, method, grayordinates, figure, table, chart, delta, time.perf_counter() - start, title
        )

    def roi_choices(self) -> list[tuple[str, str]]:
        """(label, key) of the ROI groups a lesion can switch off."""
        return [(ROI_LABELS[k], k) for k in ROI_GROUPS]

    def save_figure(self, figure: Any, stem: str) -> Path:
        """Write a figure for download: plotly → standalone HTML (plotly.js inlined, works offline), matplotlib →
        PNG, a DataFrame → CSV."""
        self._counter += 1
        if isinstance(figure, Figure):
            path = self.workdir / f"{stem}-{self._counter:05d}.png"
            figure.savefig(path, dpi=120, bbox_inches="tight")
        elif isinstance(figure, pd.DataFrame):
            path = self.workdir / f"{stem}-{self._counter:05d}.csv"
            figure.to_csv(path)
        else:
            path = self.workdir / f"{stem}-{self._counter:05d}.html"
            figure.write_html(path, include_plotlyjs=True, full_html=True)
        return path
