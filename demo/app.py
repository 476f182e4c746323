"""Gradio demo: segment the left atrium of a cardiac MRI with the best PSPNet, FPN and U-Net.

Run locally with `python demo/app.py` (http://127.0.0.1:7860); the same file is the
Hugging Face Space's app (see demo/build_space.py).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.processing_utils import save_file_to_cache
from gradio.utils import get_upload_folder

from lasegm import LasegmError
from lasegm.anatomy import TASK02_VOXEL_AXES, parse_axes, task02_header_warning
from lasegm.batch import is_zip, unzip
from lasegm.checkpoint import ENSEMBLE_MEMBERS, SERVED
from lasegm.data import load_volume
from lasegm.metrics import case_metrics, error_counts
from lasegm.predict import Ensemble, load_segmenter, segment_scan, write_mask
from lasegm.utils import set_cpu_threads
from lasegm.viewer import PLANES, display_of, plane_axis, render_plane, slice_direction, voxel_at
from lasegm.viz import ERROR_LEGEND, MODES, TRUTH_RGBA, mesh_volume_ml, save_mesh, surface_mesh

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent if (HERE.parent / "checkpoints").is_dir() else HERE  # repo checkout or assembled Space

ARCHS = SERVED
ENSEMBLE = "ensemble"
NAMES = {"pspnet": "PSPNet", "fpn": "FPN", "unet": "U-Net", ENSEMBLE: "Ensemble (mean of the three)"}
CHECKPOINTS = Path(os.environ.get("LASEGM_CHECKPOINTS", ROOT / "checkpoints"))
EXAMPLES = HERE / "examples" if (HERE / "examples").is_dir() else ROOT / "demo" / "examples"
MAX_UPLOAD_MB = 200
MAX_UNZIPPED_MB = 1000  # a .zip of a DICOM series: what it may unpack to
SCAN_TYPES = [".nii", ".gz", ".zip"]  # NIfTI, or a .zip of one DICOM series
ALL = "all three side by side"
CHOICES = [(NAMES[a], a) for a in ARCHS] + [(NAMES[ENSEMBLE], ENSEMBLE), ("All three side by side", ALL)]
PLAY, PAUSE = "▶ Play", "⏸ Pause"
# run in the browser when the input changes: the planes, 3D views, table and downloads of an earlier result go
# before any server round trip (the preview that follows draws the new scan)
CLEAR_JS = "() => [null, null, null, null, null, '', null]"
PLANES_AXIS = {plane: plane_axis(plane) for plane in PLANES}
# The voxel axes' directions: the header's (a scan from a scanner or converter), or declared when it is wrong
AXES_LABEL = "Voxel axes"
FROM_HEADER = "header"
TASK02_CHOICE = f"{TASK02_VOXEL_AXES} (Decathlon Task02 file)"
AXES_CHOICES = [("from the header", FROM_HEADER), (TASK02_CHOICE, TASK02_VOXEL_AXES)]

N_OUTPUTS = 17  # what every handler of the page returns: see `outputs` in build_app
_models: dict = {}
# session -> the token of the input on its page (input_token): a run shows its result only if its input is still there
_on_page: dict[str, str] = {}


def get_model(arch: str):
    """Load each checkpoint once per process; a missing one is an error for that model only."""
    if arch not in _models:
        if arch == ENSEMBLE:
            _models[arch] = Ensemble([get_model(a) for a in ENSEMBLE_MEMBERS])  # the loaded single models, not copies
        else:
            # a multi-view checkpoint (its views averaged) is served the same way (lasegm.checkpoint)
            _models[arch] = load_segmenter(CHECKPOINTS / arch, device="auto", expected_arch=arch)
    return _models[arch]


def seen_in_training(model, path: Path) -> bool:
    """Whether the scan's file name names a patient the model (or an ensemble member) trained on, as the bundled
    examples and the MSD files do: its Dice there shows how well the model fits, not how accurate it is."""
    stem = path.name.split(".")[0]
    return any(stem == c or stem.startswith(f"{c}_") for c in model.trained_on)


def _path(file) -> Path | None:
    if file is None:
        return None
    return Path(file if isinstance(file, (str, Path)) else getattr(file, "name", file))


def _check_upload(path: Path, what: str) -> None:
    if what == "scan" and path.suffix.lower() == ".zip":
        pass  # a DICOM series
    elif not path.name.endswith((".nii", ".nii.gz")):
        kinds = "a .nii or .nii.gz volume, or a .zip of one DICOM series" if what == "scan" else "a .nii or .nii.gz"
        raise gr.Error(f"The {what} '{path.name}' is not a NIfTI file: upload {kinds}.")
    size_mb = path.stat().st_size / 1e6
    if size_mb > MAX_UPLOAD_MB:
        raise gr.Error(f"The {what} is {size_mb:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")


def declared_axes(choice) -> str | None:
    """The axes choice -> None (trust the header) or three validated letters; a one-line gr.Error otherwise."""
    text = "" if choice is None else str(choice).strip()
    labels = {label.lower(): value for label, value in AXES_CHOICES}
    text = labels.get(text.lower(), text)  # a choice's label, as a typed value or an API call may give it
    if text.lower() in ("", FROM_HEADER):
        return None
    try:
        return parse_axes(text)
    except LasegmError as e:
        raise gr.Error(f"{AXES_LABEL}: " + str(e).removeprefix("--axes ").replace("\n", " ")) from None


def header_warning(vol) -> str | None:
    """When the header was trusted and looks like a Task02 release file's: the warning, naming the axes choice."""
    if vol.axes is not None:
        return None
    text = task02_header_warning(vol.affine)
    if text is None:
        return None
    hint, here = f"pass --axes {TASK02_VOXEL_AXES}", f"choose {AXES_LABEL}: \u201c{TASK02_CHOICE}\u201d"
    return text.replace(hint, here) if hint in text else f"{text} (here: {here})"


def _read(image_path: Path, label_path: Path | None, declared: str | None):
    """lasegm.data.load_volume of a NIfTI file, or of the one DICOM series in a .zip (unpacked into a temporary
    folder, gone once read)."""
    if not is_zip(image_path):
        return load_volume(image_path, label_path, axes=declared)
    with tempfile.TemporaryDirectory(prefix="lasegm-demo-zip-") as folder:
        try:
            unzip(image_path, folder, max_mb=MAX_UNZIPPED_MB)
            return load_volume(folder, label_path, axes=declared)
        except LasegmError as e:  # name the upload, not the folder it was unpacked to
            message = str(e).replace(str(Path(folder).resolve()), image_path.name).replace(folder, image_path.name)
            raise LasegmError(message.replace("give one series' folder", "upload a .zip of one series")) from None
        except Exception as e:  # noqa: BLE001 - any file in a user's zip: one line, never a traceback or a path
            raise LasegmError(f"{image_path.name}: unreadable DICOM in the .zip ({type(e).__name__})") from None


def load_inputs(image_file, label_file, axes=FROM_HEADER):
    """The uploaded scan (and label), validated, read with the axes choice; messages name files, never the
    server's folders."""
    image_path, label_path = _path(image_file), _path(label_file)
    if image_path is None:
        raise gr.Error("Upload a scan (.nii, .nii.gz, or a .zip of a DICOM series) or pick an example patient first.")
    declared = declared_axes(axes)
    _check_upload(image_path, "scan")
    if label_path is not None:
        _check_upload(label_path, "label")
    try:
        vol = _read(image_path, label_path, declared)
    except LasegmError as e:
        message = str(e)
        for p in (image_path, label_path):
            message = message.replace(str(p.parent) + "/", "") if p is not None else message
        raise gr.Error(message.splitlines()[0] if message else "unreadable input") from None
    if min(vol.image.shape) < 2:
        raise gr.Error(f"'{image_path.name}' has shape {vol.image.shape}: a single slice is not a 3D scan; "
                       "upload the whole volume.")
    return vol, image_path


def input_token(image_file, label_file, axes=FROM_HEADER) -> str:
    """What a result belongs to: the scan and label files (path, size, time) and the axes choice."""
    parts = []
    for path in (_path(image_file), _path(label_file)):
        try:
            st = path.stat()
            parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        except (AttributeError, OSError):  # none, or gone
            parts.append(str(path))
    try:
        parts.append(str(declared_axes(axes)))
    except gr.Error:
        parts.append(f"invalid:{axes}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _session(request) -> str | None:
    """The browser tab's (or API client's) session; None for a direct call from Python."""
    return getattr(request, "session_hash", None) if request is not None else None


def _put_on_page(request, token: str) -> None:
    session = _session(request)
    if session is not None:
        _on_page[session] = token


def _still_on_page(request, token: str) -> bool:
    """Whether the input a run started on is still the one on its page (it always is for a direct call)."""
    session = _session(request)
    return session is None or _on_page.get(session, token) == token


class _Superseded(Exception):
    """The page's input changed while the models ran: the run stops, its result would belong to nothing shown."""


def forget_session(request: gr.Request) -> None:
    _on_page.pop(_session(request), None)


def view_state(vol, masks: dict | None = None) -> dict:
    """What the viewer draws: the scan, label and masks on the display grid (lasegm.viewer.DISPLAY_ORIENTATION, from
    the scan's anatomical affine: the same picture however the scan is stored and whatever the models slice),
    the voxel size, the display grid's affine, and a default window (1-99th intensity percentiles)."""
    display = display_of(vol.affine, vol.image.shape)
    image = display(vol.image)
    return {"image": image.astype(np.float32), "spacing": display.spacing, "affine": display.affine, "names": NAMES,
            "label": None if vol.label is None else display(vol.label),
            "masks": {a: display(m) for a, m in (masks or {}).items()},
            "window": tuple(float(v) for v in np.percentile(image, (1, 99))),
            "range": (float(image.min()), float(image.max()))}


def _centre(state) -> list[int]:
    """Slice positions through the middle of the atrium (truth, else the first mask), else the scan's centre."""
    ref = state["label"] if state["label"] is not None and state["label"].any() else next(
        (m for m in state["masks"].values() if m.any()), None)
    if ref is None:
        return [s // 2 for s in state["image"].shape]
    return [int(round(c.mean())) for c in np.nonzero(ref)]


def _view_outputs(state, meshes=None, table: str = "", metrics=None, files=None) -> tuple:
    """Everything the page shows, in the order of OUTPUTS (see build_app)."""
    stopped = (False, gr.Timer(active=False), gr.update(value=PLAY))
    if state is None:  # nothing of any earlier scan: every slider its own update (gradio consumes an update's value)
        sliders = [gr.update(minimum=0, value=0, maximum=1, interactive=False) for _ in PLANES]
        window = [gr.update(interactive=False) for _ in ("level", "width")]
        return (None, *stopped, *sliders, None, None, None, *window, *_empty_meshes(), table, metrics, files)
    pos = _centre(state)
    sliders = [gr.update(minimum=0, maximum=state["image"].shape[PLANES_AXIS[plane]] - 1,
                         value=pos[PLANES_AXIS[plane]], interactive=True) for plane in PLANES]
    lo, hi = state["window"]
    r0, r1 = state["range"]
    span = max(r1 - r0, 1e-3)  # a constant scan still gets sliders whose minimum is below their maximum
    level = gr.update(minimum=r0, maximum=r0 + span, value=(lo + hi) / 2, interactive=True)
    width = gr.update(minimum=span / 500, maximum=span, value=max(hi - lo, span / 500), interactive=True)
    planes = [render_plane(state, plane, pos[PLANES_AXIS[plane]]) for plane in PLANES]
    meshes = meshes or {}
    pred, truth = meshes.get("prediction"), meshes.get("truth")
    return (state, *stopped, *sliders, *planes, level, width,
            gr.update(value=pred and pred["view"], label="3D: predicted atrium" + (
                f" ({NAMES[pred['model']]}, {pred['volume_ml']:.1f} mL)" if pred else "")),
            gr.update(value=truth and truth["view"], label="3D: ground truth" + (
                f" ({truth['volume_ml']:.1f} mL)" if truth else "")),
            table, metrics, files)


def _empty_meshes() -> tuple:
    return (gr.update(value=None, label="3D: predicted atrium"), gr.update(value=None, label="3D: ground truth"))


def _notice(warning: str | None) -> str:
    return f"<p><b>Warning ({AXES_LABEL.lower()}):</b> {warning}</p>" if warning else ""


def preview(image_file, label_file, axes=FROM_HEADER, request: gr.Request = None):
    """As soon as a scan (or label, or the axes choice) is chosen: the scan in three planes, and nothing of any
    earlier result. From now on this input is the page's: a run on another one will not show its result here."""
    _put_on_page(request, input_token(image_file, label_file, axes))
    if _path(image_file) is None:
        return _view_outputs(None)
    try:
        vol, _ = load_inputs(image_file, label_file, axes)
    except gr.Error as e:
        message = str(getattr(e, "message", e))
        gr.Warning(message)
        return _view_outputs(None, table=f"<p><b>Cannot show this scan:</b> {message}</p>")
    warning = header_warning(vol)
    if warning:
        gr.Warning(warning)
    return _view_outputs(view_state(vol), table=f"{_notice(warning)}<p>Scan loaded: press <b>Segment</b>.</p>")


def segment(image_file, label_file, model_choice: str, axes=FROM_HEADER, progress=gr.Progress(),
            request: gr.Request = None):
    """Whole-volume inference for the chosen model(s), the scan read with the axes choice; results are cached
    in the session state. The result is shown only beside the input it was computed from: when the page's input
    changed while the models ran, nothing on the page changes and a message says the result was discarded."""
    token = input_token(image_file, label_file, axes)
    _put_on_page(request, token)  # the page's input (its preview may still be on its way)
    vol, image_path = load_inputs(image_file, label_file, axes)
    archs = ARCHS if model_choice == ALL else (model_choice,)

    def report(i, arch, done, total):
        if not _still_on_page(request, token):
            raise _Superseded
        progress((i + done / total) / len(archs), desc=f"{NAMES[arch]}: slice {done}/{total}")

    try:
        shown = _segment(vol, image_path, archs, report)
        if not _still_on_page(request, token):  # the last moment the server can tell
            raise _Superseded
        return shown
    except _Superseded:
        gr.Warning(f"The result for '{image_path.name}' was discarded: the input changed while the models ran. "
                   "Press Segment to run on the input shown now.")
        return tuple(gr.skip() for _ in range(N_OUTPUTS))


def _segment(vol, image_path: Path, archs, report) -> tuple:
    """segment's work: every model's mask, row of the table, files to download and the 3D views (shown: U-Net's)."""
    stem = image_path.name.split(".")[0]
    masks, rows, files = {}, [], []
    with tempfile.TemporaryDirectory(prefix="lasegm-demo-") as out_dir:  # per request: users never share files
        out_dir = Path(out_dir)
        for i, arch in enumerate(archs):
            try:
                model = get_model(arch)
            except LasegmError as e:
                rows.append({"model": arch, "error": str(e)})
                continue
            masks[arch], result = segment_scan(model, vol, lambda done, total, i=i, arch=arch: report(
                i, arch, done, total))
            slices = model.pre.geometry(vol.affine, vol.image.shape).model_shape[2]  # along the model's slice axis
            qc = [(f, w) for f, w in zip(result["flags"], result["warnings"]) if f != "task02_header"]  # see notice
            row = {"model": arch, "seconds": round(result["seconds"], 2), "slices": int(slices),
                   "volume_ml": round(result["volume_ml"], 1), "flags": [f for f, _ in qc],
                   "warnings": [w for _, w in qc]}
            cv = model.config.get("cv")
            if cv:  # the model's accuracy estimate: its recipe's out-of-fold mean 3D Dice
                row["cv_dice_3d"] = round(cv["oof_dice_3d_mean"], 3)
            if vol.label is not None:
                m = case_metrics(masks[arch], vol.label, vol.spacing)
                row.update(dice_3d=round(m["dice"], 4), hd95_mm=round(m["hd95_mm"], 2),
                           true_volume_ml=round(m["volume_true_ml"], 1), **error_counts(masks[arch], vol.label),
                           seen_in_training=seen_in_training(model, image_path))
            rows.append(row)
            files.append(write_mask(masks[arch], vol, out_dir / f"{stem}_{arch}_mask.nii.gz"))
        if not masks:
            raise gr.Error("No model could be loaded: " + "; ".join(r["error"] for r in rows))
        state = view_state(vol, masks)
        shown = "unet" if "unet" in masks else next(iter(masks))
        meshes = _meshes(state, shown, out_dir / stem)
        # into gradio's cache (by content: a file made twice is kept once); the temporary folder goes
        cache = get_upload_folder()
        for mesh in meshes.values():
            mesh["file"], mesh["view"] = (save_file_to_cache(mesh[k], cache) for k in ("file", "view"))
        files = [save_file_to_cache(f, cache) for f in files] + [mesh["file"] for mesh in meshes.values()]
    warning = header_warning(vol)
    record = {"models": rows, "meshes": meshes, "axes": vol.axes or FROM_HEADER, "header_warning": warning,
              "input": image_path.name}
    return _view_outputs(state, meshes, _notice(warning) + _table(rows), record, files)


def world_mesh(verts, faces, normals, affine, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A surface in mm along a grid's voxel axes -> the scan's world (RAS+ mm, by its anatomical affine). The
    display grid is left-handed (L, A, S): taken as x, y, z as it stands, it would be the mirror image of the
    atrium; in the world it is the patient's own, and each face's winding is reversed with the mirroring, so it
    keeps facing the way it did (the mesh's signed volume stays positive)."""
    to_world = np.asarray(affine, np.float64)[:3, :3] / np.asarray(spacing, np.float64)  # mm on the grid -> world
    world = verts.astype(np.float64) @ to_world.T + np.asarray(affine, np.float64)[:3, 3]
    turned = normals.astype(np.float64) @ np.linalg.inv(to_world)  # normals map by the inverse transpose
    turned /= np.maximum(np.linalg.norm(turned, axis=1, keepdims=True), 1e-12)
    if np.linalg.det(to_world) < 0:  # a mirroring map reverses every face's winding
        faces = faces[:, ::-1]
    return world.astype(np.float32), np.ascontiguousarray(faces), turned.astype(np.float32)


def _meshes(state, arch: str, stem: Path) -> dict:
    """Surface meshes of one model's prediction and of the ground truth: GLB for the 3D views, OBJ to
    download. Coordinates are the scan's world in mm, x toward the patient's right, y anterior, z superior
    (RAS+, by the scan's anatomical affine: the header's, or the declared axes')."""
    out = {}
    for kind, mask in (("prediction", state["masks"][arch]), ("truth", state["label"])):
        if mask is None or not mask.any():
            continue
        verts, faces, normals = world_mesh(*surface_mesh(mask, state["spacing"]), state["affine"], state["spacing"])
        name = f"{stem}_{arch if kind == 'prediction' else 'truth'}_atrium"
        colour = {"rgba": TRUTH_RGBA} if kind == "truth" else {}
        out[kind] = {"file": str(save_mesh(verts, faces, normals, f"{name}.obj", **colour)),
                     "view": str(save_mesh(verts, faces, normals, f"{name}.glb", **colour)),
                     "model": arch if kind == "prediction" else "ground truth",
                     "volume_ml": round(mesh_volume_ml(verts, faces), 1), "vertices": int(len(verts))}
    return out


def toggle_play(is_playing, state):
    """Play only with a result loaded; the button says what it will do."""
    playing = bool(state) and not is_playing
    return playing, gr.Timer(active=playing), gr.update(value=PAUSE if playing else PLAY)


def step(state, z, y, x, mode, opacity, level, width):
    """One frame of Play: the next axial slice (wrapping, inferior to superior), drawn."""
    if not state:
        return z, None, None, None
    z = (int(z) + 1) % state["image"].shape[PLANES_AXIS["axial"]]
    return z, *render(state, z, y, x, mode, opacity, level, width)


def pick(plane: str):
    """A click on one plane's picture moves the other two planes through the clicked point."""
    def on_select(state, z, y, x, mode, opacity, level, width, evt: gr.SelectData):
        indices = dict(zip(PLANES, (z, y, x)))
        voxel = voxel_at(state, plane, indices[plane], *evt.index) if state and evt.index else None
        if voxel is not None:  # else a caption, a gap, or nothing loaded: nothing moves
            indices = {p: voxel[PLANES_AXIS[p]] for p in PLANES}
        return *indices.values(), *render(state, *indices.values(), mode, opacity, level, width)
    return on_select


def render(state, z, y, x, mode="overlay", opacity=0.45, level=None, width=None):
    """The three planes from the session's cached results (the models never run again): cheap. z, y, x: the
    axial, coronal and sagittal slices (display grid axes 2, 1, 0)."""
    return tuple(render_plane(state, plane, index, mode, float(opacity), level, width)
                 for plane, index in zip(PLANES, (z, y, x)))


COLUMNS = [("model", "Model", ""), ("dice_3d", "3D Dice", ""), ("cv_dice_3d", "Cross-validated Dice", ""),
           ("hd95_mm", "HD95", "mm"),
           ("volume_ml", "Atrium volume", "mL"), ("true_volume_ml", "True volume", "mL"),
           ("tp", "True pos.", "voxels"), ("fp", "False pos.", "voxels"), ("fn", "False neg.", "voxels"),
           ("flags", "QC flags", ""), ("seconds", "Time", "s")]


def _table(rows) -> str:
    """Results as an HTML table that scrolls sideways on a phone rather than squeezing."""
    has_label = any("dice_3d" in r for r in rows)
    cols = [c for c in COLUMNS if has_label or c[0] not in ("dice_3d", "hd95_mm", "true_volume_ml", "tp", "fp", "fn")]
    head = "".join(f"<th>{name}{f' ({unit})' if unit else ''}</th>" for _, name, unit in cols)
    body = []
    for r in rows:
        if "error" in r:
            body.append(f"<tr><td>{NAMES.get(r['model'], r['model'])}</td><td colspan='{len(cols) - 1}'>"
                        f"unavailable: {r['error']}</td></tr>")
        else:
            cells = [NAMES.get(r["model"], r["model"])] + [r.get(k, "–") for k, _, _ in cols[1:]]
            cells[[k for k, _, _ in cols].index("flags")] = ", ".join(r.get("flags", [])) or "none"
            if r.get("seen_in_training"):
                cells[1] = f"{cells[1]} †"
            body.append("<tr>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>")
    warnings = "".join(f"<p><b>Warning ({NAMES.get(r['model'], r['model'])}):</b> {w}</p>"
                       for r in rows for w in r.get("warnings", []))
    note = ("3D Dice and HD95 over the whole patient volume. Overlay: prediction filled, ground truth outlined; "
            f"contour: prediction orange-red, truth green; {ERROR_LEGEND}. Cross-validated Dice: the model's "
            "accuracy estimate, its recipe's mean 3D Dice out of fold (each development patient scored by a model "
            "that never saw it). QC flags: empty (no atrium found), volume (implausible), unsure (the model's own "
            "confidence), and any other check that fired (e.g. a scan unlike the training scans); each is explained "
            "above the table.")
    if any(r.get("seen_in_training") for r in rows):
        note += (" † This patient was in the model's training data: its Dice shows how well the model fits it, "
                 "not how accurate the model is.")
    return (f"{warnings}<div style='overflow-x:auto'><table id='results-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div><p style='font-size:0.85em'>{note}</p>")


def example_rows() -> list[list[str]]:
    rows = []
    for image in sorted(EXAMPLES.glob("*_image.nii.gz")):
        label = image.with_name(image.name.replace("_image", "_label"))
        rows.append([str(image), str(label) if label.exists() else None, FROM_HEADER])  # stored with true headers
    return rows


def build_app() -> gr.Blocks:
    with gr.Blocks(title="lasegm: left-atrium segmentation") as app:
        gr.Markdown("# Left-atrium segmentation of cardiac MRI\nPSPNet, FPN and U-Net trained on the Medical "
                    "Segmentation Decathlon Task02_Heart. Upload a 3D scan (NIfTI, or a .zip of one DICOM series; "
                    "optionally its NIfTI label) or pick an example patient, then press **Segment**. Research demo, "
                    "**not for clinical use**.")
        state = gr.State(None)
        playing = gr.State(False)
        timer = gr.Timer(0.15, active=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image_file = gr.File(label="Scan (.nii / .nii.gz, or a .zip of one DICOM series)",
                                     file_types=SCAN_TYPES, elem_id="scan-file")
                label_file = gr.File(label="Label (optional, .nii / .nii.gz)", file_types=[".nii", ".gz"],
                                     elem_id="label-file")
                axes = gr.Dropdown(AXES_CHOICES, value=FROM_HEADER, label=AXES_LABEL, allow_custom_value=True,
                                   elem_id="axes", info="Which way the scan's voxel axes run. The header says so for "
                                   "a scan from a scanner or a converter; a Decathlon Task02_Heart file's header "
                                   "is wrong (it says RAS, its axes run ASR). Other codes: type three letters, "
                                   "e.g. LPS.")
                model_choice = gr.Radio(CHOICES, value="unet", label="Model")
                run = gr.Button("Segment", variant="primary")
                # the served models trained on all 16 development patients, these two among them
                examples = gr.Examples(example_rows(), inputs=[image_file, label_file, axes],
                                       label="Example patients (from the served models' training data)")
                mode = gr.Radio(list(MODES), value="overlay", label="Show results as")
                opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Overlay opacity")
                level = gr.Slider(0, 1, value=0.5, label="Window level (scan intensity)", interactive=False)
                width = gr.Slider(0, 1, value=1, label="Window width (scan intensity)", interactive=False)
            with gr.Column(scale=3, min_width=300):
                views, sliders = [], []
                with gr.Row(equal_height=False):
                    for plane in PLANES:
                        with gr.Column(min_width=300):
                            views.append(gr.Image(label=plane.capitalize(), type="numpy", interactive=False,
                                                  elem_id=f"view-{plane}", show_label=False))
                            sliders.append(gr.Slider(0, 1, value=0, step=1, label="{} slice ({} \u2192 {})".format(
                                plane.capitalize(), *slice_direction(plane)), interactive=False,
                                elem_id=f"slider-{plane}"))
                play = gr.Button(PLAY, elem_id="play", size="sm")
                with gr.Row(equal_height=False):
                    mesh_pred = gr.Model3D(label="3D: predicted atrium", elem_id="mesh-pred", height=320,
                                           min_width=300)
                    mesh_truth = gr.Model3D(label="3D: ground truth", elem_id="mesh-truth", height=320,
                                            min_width=300)
                results = gr.HTML(elem_id="results")
                metrics = gr.JSON(label="Metrics", visible=False)
                files = gr.File(label="Predicted masks (NIfTI, on the uploaded scan's grid and affine) and atrium "
                                "surfaces (OBJ, mm)", file_count="multiple", elem_id="downloads")
        # the API returns these without the State ones, ending with results, metrics, files
        outputs = [state, playing, timer, play, *sliders, *views, level, width, mesh_pred, mesh_truth, results,
                   metrics, files]
        assert len(outputs) == N_OUTPUTS
        inputs = [image_file, label_file, axes]
        # another input, one event per user action (an example sets scan, label and axes at once): the earlier
        # result leaves the page at once (in the browser), then the new input previews
        changes = [image_file.upload, image_file.clear, label_file.upload, label_file.clear, axes.input]
        gr.on([*changes, examples.dataset.click], None, None, [*views, mesh_pred, mesh_truth, results, files],
              js=CLEAR_JS, api_visibility="private", queue=False, show_progress="hidden")
        running = run.click(segment, [image_file, label_file, model_choice, axes], outputs, api_name="segment")
        controls = [state, *sliders, mode, opacity, level, width]
        drawing = []  # events that draw the cached result: one still queued must not draw it beside a new input
        # user moves only (.input): an update the app makes itself never re-renders an older state afterwards
        for i, control in enumerate([*sliders, mode, opacity, level, width]):  # cached results: re-render only
            drawing.append(control.input(render, controls, views, api_name="render" if i == 0 else False,
                                         show_progress="hidden", trigger_mode="always_last"))
        for plane, view in zip(PLANES, views):  # click a point: the other planes go through it
            drawing.append(view.select(pick(plane), controls, [*sliders, *views], api_name=False,
                                       show_progress="hidden"))
        play.click(toggle_play, [playing, state], [playing, timer, play], api_name=False)
        drawing.append(timer.tick(step, controls, [sliders[PLANES.index("axial")], *views], api_name=False,
                                  show_progress="hidden"))
        # ... and a run still going on the earlier input stops (its result would belong to nothing on the page);
        # always_last: an input given while the previous one still previews (clear, then upload) is never dropped
        gr.on(changes, preview, inputs, outputs, api_name="preview", show_progress="minimal",
              cancels=[running, *drawing], trigger_mode="always_last")
        examples.load_input_event.then(preview, inputs, outputs, api_visibility="private", show_progress="minimal",
                                       cancels=[running, *drawing])
        app.unload(forget_session)
    return app


def main() -> None:
    set_cpu_threads()
    for arch in (*ARCHS, ENSEMBLE):  # load once at start: the first click pays no loading time
        try:
            get_model(arch)
        except LasegmError:
            pass  # reported when that model is asked for
    app = build_app()
    app.queue(default_concurrency_limit=2, max_size=32)  # extra users wait in line
    app.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
               server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
               max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True)


if __name__ == "__main__":
    main()
