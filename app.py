"""MindReel: reconstruct the video a subject watched from fMRI, and see which features and cortical regions drive it.

    python app.py                          # the demo bundle in assets/demo (a simulated subject)
    python app.py --bundle runs/bundle     # any bundle written by `python -m pipelines build-bundle`

Thin by design (../shared/DESIGN.md, "The app"): ``build_demo(workbench)`` lays out the page over a
:class:`brainviz.workbench.Workbench`, which does every computation; loading and launching happen under
``__main__``. Deployment settings come from the environment (``GRADIO_SERVER_NAME``, ``GRADIO_SERVER_PORT``; Hugging
Face Spaces sets both); no server name is hard-coded and nothing is fetched from the network at start.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls, before gradio is imported

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from brainviz.workbench import ABLATIONS, Workbench  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; elsewhere a no-op with the same call forms (@GPU and @GPU(duration=...))
    import spaces

    GPU = spaces.GPU
except ImportError:

    def GPU(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "demo"
MAX_FILE_SIZE = "200mb"  # one HCP 91k run of ~250 TRs in float32 is about 90 MB
SOURCES = ("test clip", "uploaded run")
MAPS = {  # label → (kind, method)
    "attribution: Saliency": ("attribution", "saliency"),
    "attribution: IntegratedGradients": ("attribution", "integrated_gradients"),
    "attention: rollout (fMRI encoder)": ("attention", "rollout"),
    "attention: raw, last layer (fMRI encoder)": ("attention", "raw"),
}
SPACES = {"fsLR-32k inflated": "fslr", "fsaverage5 (resampled preview)": "fsaverage5"}


def _clip(workbench: Workbench, source: str, index, upload, tr):
    if source == "uploaded run":
        if not upload:
            raise ValueError("uploaded run: expected a *.dtseries.nii file of the bundle's subject, got no file.")
        if tr is None:
            raise ValueError("TR: expected the volume to reconstruct, got none.")
        return workbench.upload_window(upload, tr)
    if index is None:
        raise ValueError("clip: expected a test clip, got none.")
    return workbench.test_clip(int(index))


def _metrics_markdown(result) -> str:
    lines = [f"**{result.clip.label}**" + (f": *{result.clip.caption}*" if result.clip.caption else "")]
    off = ", ".join(result.ablated) or "none"
    lines.append(
        f"Ablated: {off}; lesioned ROI groups: {', '.join(result.lesion) or 'none'} "
        f"({result.lesioned_voxels} voxels set to their training mean); {result.seconds:.2f} s."
    )
    if result.metrics:
        lines += ["", "| metric | this run | intact | change |", "|---|---|---|---|"]
        for k, v in result.metrics.items():
            lines.append(f"| {k} | {v:.3f} | {result.intact[k]:.3f} | {result.change[k]:+.3f} |")
        lines.append("\nSSIM and PSNR against the ground truth (higher is better); flow EPE against RAFT (lower).")
    else:
        lines.append("No ground truth for an uploaded run: no metrics.")
    return "\n".join(lines)


def build_demo(workbench: Workbench) -> gr.Blocks:
    """The page over one opened bundle."""
    choices = workbench.clip_choices()
    roi_choices = workbench.roi_choices()

    @GPU(duration=60)
    def reconstruct(source, index, upload, tr, ablate, lesion):
        try:
            clip = _clip(workbench, source, index, upload, tr)
            result = workbench.reconstruct(clip, ablate or [], lesion or [])
            flow = workbench.flow_figure(result)
            flow_file = None if flow is None else str(workbench.save_figure(flow, "flow"))
        except (ValueError, FileNotFoundError) as err:
            raise gr.Error(str(err)) from err
        truth = result.files.get("ground_truth")
        files = [str(result.files["reconstruction"])] + ([flow_file] if flow_file else [])
        return (
            None if truth is None else str(truth),
            str(result.files["reconstruction"]),
            _metrics_markdown(result),
            flow,
            files,
        )

    @GPU(duration=120)
    def show_map(source, index, upload, tr, map_label, decoder, space, view):
        try:
            if map_label not in MAPS:
                raise ValueError(f"map: expected one of {list(MAPS)}, got {map_label!r}.")
            if space not in SPACES:
                raise ValueError(f"surface: expected one of {list(SPACES)}, got {space!r}.")
            kind, method = MAPS[map_label]
            clip = _clip(workbench, source, index, upload, tr)
            result = workbench.brain_map(
                clip, kind=kind, decoder=decoder, method=method, space=SPACES[space], view=view
            )
            files = [
                str(workbench.save_figure(result.figure, "map")),
                str(workbench.save_figure(result.roi_table, "roi")),
            ]
        except (ValueError, FileNotFoundError) as err:
            raise gr.Error(str(err)) from err
        note = f"{result.title}. {result.seconds:.2f} s."
        if result.delta is not None:
            note += f" IntegratedGradients convergence delta (mean |Σ attribution − Δf|): {result.delta:.2e}."
        if kind == "attention":
            note += " Attention shows where the encoder looks; it is not an attribution."
        table = result.roi_table.reset_index(names="map").round(3)
        return result.figure, table, result.roi_chart, note, files

    with gr.Blocks(title="MindReel") as demo:
        gr.Markdown("# MindReel: video reconstruction from fMRI, and why")
        gr.Markdown(workbench.summary())
        evaluation = workbench.evaluation_summary()
        if evaluation is not None:
            with gr.Accordion("This bundle's evaluation (results.json)", open=False):
                gr.Markdown(evaluation)
        with gr.Row():
            with gr.Column(scale=2):
                source = gr.Radio(list(SOURCES), value=SOURCES[0], label="input")
                index = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, label="test clip")
                with gr.Row():
                    upload = gr.File(
                        label="or a dtseries run of the bundle's subject", file_types=[".nii"], type="filepath"
                    )
                    tr = gr.Number(value=workbench.pipeline.info.centre, precision=0, label="TR (window centre)")
            with gr.Column(scale=1):
                ablate = gr.CheckboxGroup(list(ABLATIONS), value=[], label="ablate (switch off)")
                lesion = gr.CheckboxGroup(roi_choices, value=[], label="virtual lesion (ROI groups)")
                run = gr.Button("Reconstruct", variant="primary")
        with gr.Row():
            truth = gr.Video(label="ground truth", format="mp4", autoplay=True, loop=True)
            video = gr.Video(label="reconstruction", format="mp4", autoplay=True, loop=True)
        metrics = gr.Markdown()
        flow = gr.Plot(label="flow: RAFT of the ground truth (top), decoded (middle), EPE (bottom)")
        downloads = gr.File(label="downloads", file_count="multiple")
        gr.Markdown("## Cortical maps")
        with gr.Row():
            map_label = gr.Dropdown(list(MAPS), value=next(iter(MAPS)), label="map")
            first = "semantic" if "semantic" in workbench.decoders else workbench.decoders[0]
            decoder = gr.Dropdown(workbench.decoders, value=first, label="decoder")
            space = gr.Dropdown(list(SPACES), value=next(iter(SPACES)), label="surface")
            view = gr.Dropdown(["lateral", "medial", "ventral", "posterior"], value="lateral", label="view")
            show = gr.Button("Show map")
        surface = gr.Plot(label="surface map")
        map_note = gr.Markdown()
        with gr.Row():
            rois = gr.Dataframe(label="share per ROI group")
            roi_chart = gr.Plot(label="ROI chart")
        map_files = gr.File(label="map downloads (HTML, CSV)", file_count="multiple")

        clip_inputs = [source, index, upload, tr]
        run.click(
            reconstruct,
            [*clip_inputs, ablate, lesion],
            [truth, video, metrics, flow, downloads],
            api_name="reconstruct",
            concurrency_limit=1,
            concurrency_id="gpu",
        )
        show.click(
            show_map,
            [*clip_inputs, map_label, decoder, space, view],
            [surface, rois, roi_chart, map_note, map_files],
            api_name="show_map",
            concurrency_limit=1,
            concurrency_id="gpu",
        )
    demo.queue(max_size=32)
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="bundle folder (default: assets/demo)")
    parser.add_argument("--device", default="cpu", help="torch device for the models, e.g. cuda")
    parser.add_argument("--port", type=int, help="server port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    args = parser.parse_args(argv)
    try:
        workbench = Workbench.from_bundle(args.bundle, device=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        if Path(args.bundle) == DEFAULT_BUNDLE:
            print(
                "The demo bundle is not in this checkout yet. Build one with the README's 'Demo training' commands "
                "and open it with --bundle DIR.",
                file=sys.stderr,
            )
        return 1
    demo = build_demo(workbench)
    demo.launch(
        server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE, allowed_paths=[str(workbench.workdir)]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
