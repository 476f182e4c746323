"""Gradio demo: segment the left atrium of a cardiac MRI with the best PSPNet, FPN and U-Net.

Run locally with `python demo/app.py` (http://127.0.0.1:7860); the same file is the
Hugging Face Space's app (see demo/build_space.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent if (HERE.parent / "lasegm").is_dir() else HERE  # repo checkout or assembled Space
sys.path.insert(0, str(ROOT))

from lasegm import LasegmError
from lasegm.data import load_volume
from lasegm.metrics import case_metrics
from lasegm.models import SERVED
from lasegm.postprocess import plausibility_warnings
from lasegm.predict import Segmenter, write_mask
from lasegm.preprocess import normalize_intensities
from lasegm.utils import set_cpu_threads
from lasegm.viz import TRUTH_RGBA, mesh_volume_ml, overlay_rgb, save_mesh, surface_mesh

ARCHS = SERVED
CHECKPOINTS = Path(os.environ.get("LASEGM_CHECKPOINTS", ROOT / "checkpoints"))
EXAMPLES = HERE / "examples" if (HERE / "examples").is_dir() else ROOT / "demo" / "examples"
MAX_UPLOAD_MB = 200
DISPLAY_PX = 320  # slices are enlarged to at least this height for display
ALL = "all three side by side"
PLAY, PAUSE = "▶ Play", "⏸ Pause"

_models: dict[str, Segmenter] = {}


def get_model(arch: str) -> Segmenter:
    """Load each checkpoint once per process; a missing one is an error for that model only."""
    if arch not in _models:
        _models[arch] = Segmenter(CHECKPOINTS / arch, device="auto", expected_arch=arch)
    return _models[arch]


def _path(file) -> Path | None:
    if file is None:
        return None
    return Path(file if isinstance(file, (str, Path)) else getattr(file, "name", file))


def _check_upload(path: Path, what: str) -> None:
    if not path.name.endswith((".nii", ".nii.gz")):
        raise gr.Error(f"The {what} '{path.name}' is not a NIfTI file: upload a .nii or .nii.gz volume.")
    size_mb = path.stat().st_size / 1e6
    if size_mb > MAX_UPLOAD_MB:
        raise gr.Error(f"The {what} is {size_mb:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")


def segment(image_file, label_file, model_choice: str, progress=gr.Progress()):
    """Whole-volume inference for the chosen model(s); results are cached in the session state."""
    image_path, label_path = _path(image_file), _path(label_file)
    if image_path is None:
        raise gr.Error("Upload a scan (.nii or .nii.gz) or pick an example patient first.")
    _check_upload(image_path, "scan")
    if label_path is not None:
        _check_upload(label_path, "label")
    try:
        vol = load_volume(image_path, label_path)
    except LasegmError as e:
        message = str(e)
        for p in (image_path, label_path):  # never show the server's temporary folders
            message = message.replace(str(p.parent) + "/", "") if p is not None else message
        raise gr.Error(message) from None
    if min(vol.image.shape) < 2:
        raise gr.Error(f"'{image_path.name}' has shape {vol.image.shape}: a single slice is not a 3D scan; "
                       "upload the whole volume.")
    archs = ARCHS if model_choice == ALL else (model_choice,)
    out_dir = Path(tempfile.mkdtemp(prefix="lasegm-demo-"))  # per request: users never share files
    stem = image_path.name.split(".")[0]
    masks, rows, files = {}, [], []
    for i, arch in enumerate(archs):
        try:
            model = get_model(arch)
        except LasegmError as e:
            rows.append({"model": arch, "error": str(e)})
            continue
        n = vol.image.shape[2]
        t0 = time.perf_counter()
        masks[arch] = model.segment(vol, progress=lambda done, total, i=i, arch=arch: progress(
            (i + done / total) / len(archs), desc=f"{arch}: slice {done}/{total}"))
        seconds = time.perf_counter() - t0
        row = {"model": arch, "seconds": round(seconds, 2), "slices": n,
               "volume_ml": round(float(masks[arch].sum() * vol.voxel_ml), 1),
               "warnings": plausibility_warnings(masks[arch], vol.voxel_ml)}
        if vol.label is not None:
            m = case_metrics(masks[arch], vol.label, vol.spacing)
            row.update(dice_3d=round(m["dice"], 4), hd95_mm=round(m["hd95_mm"], 2),
                       true_volume_ml=round(m["volume_true_ml"], 1))
        rows.append(row)
        files.append(str(write_mask(masks[arch], vol, out_dir / f"{stem}_{arch}_mask.nii.gz")))
    if not masks:
        raise gr.Error("No model could be loaded: " + "; ".join(r["error"] for r in rows))
    # shown as the model sees the scan: in its training orientation, at the scan's physical pixel aspect
    image, geometry = get_model(next(iter(masks))).pre.model_grid(vol.image, vol.affine)
    image = normalize_intensities(image)
    state = {"image": image.astype(np.float16), "spacing": geometry.spacing,
             "label": None if vol.label is None else geometry.to_model(vol.label),
             "masks": {arch: geometry.to_model(m) for arch, m in masks.items()},
             "window": tuple(float(v) for v in np.percentile(image, (1, 99)))}
    z = _best_slice(state)
    shown = "unet" if "unet" in state["masks"] else next(iter(state["masks"]))
    meshes = _meshes(state, shown, out_dir / stem)
    for mesh in meshes.values():
        files.append(mesh["file"])
    pred = meshes.get("prediction")
    truth = meshes.get("truth")
    return (state, gr.update(maximum=image.shape[2] - 1, value=z, interactive=True),
            render(state, z, 0.45, 1.0),
            gr.update(value=pred and pred["view"], label=f"3D: predicted atrium ({shown}"
                      + (f", {pred['volume_ml']:.1f} mL)" if pred else ", empty)")),
            gr.update(value=truth and truth["view"], label="3D: ground truth" + (
                f" ({truth['volume_ml']:.1f} mL)" if truth else " (upload a label to see it)")),
            _table(rows), {"models": rows, "meshes": meshes}, files)


def _meshes(state, arch: str, stem: Path) -> dict:
    """Surface meshes (mm) of one model's prediction and of the ground truth: GLB for the 3D views,
    OBJ to download (opens over nothing else: coordinates are mm along the model's voxel axes)."""
    out = {}
    for kind, mask in (("prediction", state["masks"][arch]), ("truth", state["label"])):
        if mask is None or not mask.any():
            continue
        verts, faces, normals = surface_mesh(mask, state["spacing"])
        name = f"{stem}_{arch if kind == 'prediction' else 'truth'}_atrium"
        colour = {"rgba": TRUTH_RGBA} if kind == "truth" else {}
        out[kind] = {"file": str(save_mesh(verts, faces, normals, f"{name}.obj", **colour)),
                     "view": str(save_mesh(verts, faces, normals, f"{name}.glb", **colour)),
                     "model": arch if kind == "prediction" else "ground truth",
                     "volume_ml": round(mesh_volume_ml(verts, faces), 1), "vertices": int(len(verts))}
    return out


def cleared():
    """Empty outputs: a new input, a new run or a failed run never leaves another patient's result on screen."""
    return (None, gr.update(value=0, maximum=1, interactive=False), None, None, None, "", None, None,
            False, gr.Timer(active=False), gr.update(value=PLAY))


def toggle_play(is_playing, state):
    """Play only with a result loaded; the button says what it will do."""
    playing = bool(state) and not is_playing
    return playing, gr.Timer(active=playing), gr.update(value=PAUSE if playing else PLAY)


def _best_slice(state) -> int:
    ref = state["label"] if state["label"] is not None else next(iter(state["masks"].values()))
    area = ref.sum(axis=(0, 1))
    return int(area.argmax()) if area.any() else ref.shape[2] // 2


def render(state, z, opacity: float = 0.45, contrast: float = 1.0):
    """One slice with each model's overlay (side by side); cheap, so the slider stays responsive."""
    if not state:
        return None
    image = state["image"]
    z = int(min(max(int(z), 0), image.shape[2] - 1))
    lo, hi = state["window"]
    mid, half = (lo + hi) / 2, (hi - lo) / 2 / max(float(contrast), 0.05)
    window = (mid - half, mid + half)
    truth = None if state["label"] is None else state["label"][..., z]
    panels = [overlay_rgb(image[..., z].astype(np.float32), m[..., z], truth, alpha=float(opacity), window=window)
              for m in state["masks"].values()]
    panels = [_physical_zoom(p, state.get("spacing", (1.0, 1.0, 1.0))) for p in panels]
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def _physical_zoom(panel: np.ndarray, spacing) -> np.ndarray:
    """Nearest-neighbour zoom to at least DISPLAY_PX rows with square millimetres on screen
    (picture rows are the second voxel axis, columns the first), so voxels stay crisp."""
    sx, sy = float(spacing[0]), float(spacing[1])
    rows_mm, cols_mm = panel.shape[0] * sy, panel.shape[1] * sx
    px_per_mm = max(DISPLAY_PX / rows_mm, 1.0 / min(sx, sy))
    rows = np.minimum((np.arange(round(rows_mm * px_per_mm)) / (px_per_mm * sy)).astype(int), panel.shape[0] - 1)
    cols = np.minimum((np.arange(round(cols_mm * px_per_mm)) / (px_per_mm * sx)).astype(int), panel.shape[1] - 1)
    return panel[rows][:, cols]


def _table(rows) -> str:
    cols = ["model", "dice_3d", "hd95_mm", "volume_ml", "true_volume_ml", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | unavailable: {r['error']} |" + " |" * (len(cols) - 2))
        else:
            lines.append("| " + " | ".join(str(r.get(c, "–")) for c in cols) + " |")
    order = ", ".join(r["model"] for r in rows if "error" not in r)
    warnings = [f"**Warning ({r['model']}):** {w}" for r in rows for w in r.get("warnings", [])]
    return ("\n\n".join(warnings) + "\n\n" if warnings else "") + ("\n".join(lines) + f"\n\nPanels left to right: {order}. Red: prediction; green outline: ground truth "
            "(when a label is given). Dice is 3D, over the whole patient volume.")


def example_rows() -> list[list[str]]:
    rows = []
    for image in sorted(EXAMPLES.glob("*_image.nii.gz")):
        label = image.with_name(image.name.replace("_image", "_label"))
        rows.append([str(image), str(label) if label.exists() else None])
    return rows


def build_app() -> gr.Blocks:
    with gr.Blocks(title="lasegm: left-atrium segmentation") as app:
        gr.Markdown("# Left-atrium segmentation of cardiac MRI\nPSPNet, FPN and U-Net trained on the Medical "
                    "Segmentation Decathlon Task02_Heart. Upload a 3D NIfTI scan (and optionally its label) or pick "
                    "an example patient, then press **Segment**. Research demo, not for clinical use.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image_file = gr.File(label="Scan (.nii / .nii.gz)", file_types=[".nii", ".gz"])
                label_file = gr.File(label="Label (optional)", file_types=[".nii", ".gz"])
                model_choice = gr.Radio([*ARCHS, ALL], value="unet", label="Model")
                run = gr.Button("Segment", variant="primary")
                gr.Examples(example_rows(), inputs=[image_file, label_file], label="Example patients (test split)")
            with gr.Column(scale=2):
                view = gr.Image(label="Slice", type="numpy", interactive=False, elem_id="slice-view")
                slider = gr.Slider(0, 1, value=0, step=1, label="Slice", interactive=False, elem_id="slice-slider")
                with gr.Row():
                    opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Overlay opacity")
                    contrast = gr.Slider(0.5, 3, value=1.0, step=0.1, label="Contrast")
                    play = gr.Button(PLAY, elem_id="play")
                with gr.Row():
                    mesh_pred = gr.Model3D(label="3D: predicted atrium", elem_id="mesh-pred", height=320)
                    mesh_truth = gr.Model3D(label="3D: ground truth", elem_id="mesh-truth", height=320)
                results = gr.Markdown()
                timer = gr.Timer(0.15, active=False)
                playing = gr.State(False)
                metrics = gr.JSON(label="Metrics", visible=False)
                masks = gr.File(label="Predicted masks (NIfTI, same affine as the scan) and atrium surfaces (OBJ, mm)",
                                file_count="multiple")
        outputs = [state, slider, view, mesh_pred, mesh_truth, results, metrics, masks]
        clear_targets = [*outputs, playing, timer, play]
        for changed in (image_file, label_file):  # another input: the old result goes at once
            changed.change(cleared, None, clear_targets, api_name=False, show_progress="hidden")
        run.click(cleared, None, clear_targets, api_name=False, show_progress="hidden").then(
            segment, [image_file, label_file, model_choice], outputs, api_name="segment")
        # the session's cached predictions (gr.State) are never recomputed per slice
        for control, api_name in ((slider, "render_slice"), (opacity, False), (contrast, False)):
            control.change(render, [state, slider, opacity, contrast], view, api_name=api_name,
                           show_progress="hidden", trigger_mode="always_last")

        play.click(toggle_play, [playing, state], [playing, timer, play], api_name=False)
        timer.tick(lambda s, z: 0 if not s else (int(z) + 1) % s["image"].shape[2], [state, slider], slider,
                   api_name=False, show_progress="hidden")
    return app


def main() -> None:
    set_cpu_threads()
    app = build_app()
    app.queue(default_concurrency_limit=2, max_size=32)  # extra users wait in line
    app.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
               server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
               max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True)


if __name__ == "__main__":
    main()
