"""The Gradio demo, as users reach it: its HTTP API (gradio_client) and a real browser (Chromium)."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, synthetic_volume, write_nifti

from lasegm import viewer
from lasegm.metrics import dice

CHECKPOINTS = Path(os.environ.get("LASEGM_CHECKPOINTS", REPO / "checkpoints"))
EXAMPLE = REPO / "demo" / "examples" / "la_003_image.nii.gz"
EXAMPLE_LABEL = REPO / "demo" / "examples" / "la_003_label.nii.gz"
ALL = "all three side by side"


def demo_module(name: str):
    """demo/<name>.py imported as Python runs it (the demo is a folder of scripts, not a package), once per session."""
    key = f"demo_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "demo" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(checkpoints: Path, tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "LASEGM_CHECKPOINTS": str(checkpoints),
           "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    log = open(tmp_path / f"demo-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "demo" / "app.py")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"demo exited: {(tmp_path / f'demo-{port}.log').read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("demo did not start within 180 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    proc, url = _start(CHECKPOINTS, tmp)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def _value(x):
    while isinstance(x, dict) and ("value" in x or "path" in x):  # component updates, files
        x = x.get("value", x.get("path"))
    return x


def test_example_patient_through_the_api(client):
    from gradio_client import handle_file

    # the last input, the axes choice, may be left out (its default trusts the header), as other tests do
    out = client.predict(handle_file(str(EXAMPLE)), handle_file(str(EXAMPLE_LABEL)), ALL, "header",
                         api_name="/segment")
    *_, z_slider, y_slider, x_slider, axial, coronal, sagittal, level, width, mesh_pred, mesh_truth, table, \
        metrics, files = out
    rows = {r["model"]: r for r in metrics["models"]}
    assert set(rows) == {"pspnet", "fpn", "unet"}
    assert metrics["axes"] == "header" and metrics["header_warning"] is None  # the example's header is true
    label = np.asarray(nib.load(str(EXAMPLE_LABEL)).dataobj)
    ref = nib.load(str(EXAMPLE))
    masks = [f for f in files if f.endswith(".nii.gz")]
    assert len(masks) == 3
    for path in masks:
        arch = next(a for a in rows if f"_{a}_mask" in Path(path).name)
        mask = nib.load(path)
        assert mask.shape == ref.shape
        np.testing.assert_allclose(mask.affine, ref.affine)
        score = dice(np.asarray(mask.dataobj), label)
        assert score == pytest.approx(rows[arch]["dice_3d"], abs=1e-3)
        assert score > 0.7, f"{arch} Dice {score:.3f} on the example patient"
        assert rows[arch]["volume_ml"] > 0 and rows[arch]["seconds"] > 0
        # the error map's counts are the Dice shown
        r = rows[arch]
        assert 2 * r["tp"] / (2 * r["tp"] + r["fp"] + r["fn"]) == pytest.approx(r["dice_3d"], abs=1e-4)
        # beside it the model's accuracy estimate, and a mark when the example is one of its training patients
        config = json.loads((CHECKPOINTS / arch / "config.json").read_text())
        assert r["cv_dice_3d"] == round(config["cv"]["oof_dice_3d_mean"], 3)
        assert r["seen_in_training"] == ("la_003" in config["trained_on"])
    assert "3D Dice" in table and "Atrium volume (mL)" in table and "dice_3d" not in table  # human headers
    assert "Cross-validated Dice" in table
    assert ("† This patient was in the model's training data" in table) == any(
        r["seen_in_training"] for r in rows.values())
    z = _value(z_slider)
    assert 0 <= z < label.shape[2]

    # other positions from the cached predictions: three planes, three captioned panels each
    import imageio.v3 as iio

    first = [iio.imread(_value(p)) for p in (axial, coronal, sagittal)]
    moved = [iio.imread(_value(p)) for p in client.predict(10, 70, 90, "error map", 0.8, _value(level),
                                                            _value(width), api_name="/render")]
    gap, caption = 6, 22  # viewer.PANEL_GAP, viewer.CAPTION_PX
    for before, after in zip(first, moved):
        assert not np.array_equal(before, after)
        panel, rest = divmod(after.shape[1] - 2 * gap, 3)  # three panels (at least 300 px tall), two white gaps
        assert rest == 0 and after.shape[0] >= 300 + caption and panel > 200
        for start in (panel, 2 * panel + gap):  # white, up to the image format's lossy compression
            assert after[:, start : start + gap].mean() > 240 > after[:, start - 2 * gap : start - gap].mean()


def test_sessions_are_isolated(server, client):
    """A second user sees nothing of the first user's scan."""
    from gradio_client import Client, handle_file

    client.predict(handle_file(str(EXAMPLE)), None, "pspnet", api_name="/segment")
    stranger = Client(server, verbose=False)
    assert all(p is None for p in stranger.predict(0, 0, 0, "overlay", 0.5, 0.5, 1.0, api_name="/render"))


@pytest.mark.parametrize("case, message", [
    ("text", "Invalid file type"),  # refused by the upload widget itself
    ("tar_gz", "is not a NIfTI file"),
    ("4d", "expected a 3D volume, got 4D"),
    ("2d", "expected a 3D volume, got 2D"),
    ("label_shape", "label shape"),
    ("corrupt", "corrupt or unreadable NIfTI"),
    ("no_scan", "Upload a scan"),
    ("one_slice", "a single slice is not a 3D scan"),
])
def test_bad_inputs_get_a_message_and_the_app_keeps_serving(case, message, client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    image, label = synthetic_volume((48, 48, 10))
    scan, lab = tmp_path / "scan.nii.gz", None
    if case == "text":
        scan = tmp_path / "notes.txt"
        scan.write_text("not an image")
    elif case == "tar_gz":
        scan = tmp_path / "archive.tar.gz"
        scan.write_bytes(b"\x1f\x8b not a scan")
    elif case == "4d":
        write_nifti(scan, np.stack([image, image], -1))
    elif case == "2d":
        write_nifti(scan, image[..., 0])
    elif case == "label_shape":
        write_nifti(scan, image)
        lab = write_nifti(tmp_path / "label.nii.gz", label[:, :, :5])
    elif case == "corrupt":
        scan.write_bytes(b"\x1f\x8b garbage")
    elif case == "one_slice":
        write_nifti(scan, image[..., :1])
    with pytest.raises(AppError, match=message) as error:
        client.predict(None if case == "no_scan" else handle_file(str(scan)),
                       handle_file(str(lab)) if lab else None, "unet", api_name="/segment")
    assert "/tmp" not in str(error.value) and "gradio" not in str(error.value).lower()  # no server paths
    # the next request still works (a small scan: the models are loaded, the answer is quick)
    write_nifti(tmp_path / "ok.nii.gz", image)
    *_, metrics, _ = client.predict(handle_file(str(tmp_path / "ok.nii.gz")), None, "pspnet", api_name="/segment")
    assert metrics["models"][0]["model"] == "pspnet"


@pytest.mark.slow
def test_missing_checkpoint_is_reported_and_others_still_serve(tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    ckpts = tmp_path / "checkpoints"
    shutil.copytree(CHECKPOINTS / "pspnet", ckpts / "pspnet")
    proc, url = _start(ckpts, tmp_path)
    try:
        c = Client(url, verbose=False)
        with pytest.raises(AppError, match="checkpoint folder not found"):
            c.predict(handle_file(str(EXAMPLE)), None, "unet", api_name="/segment")
        *_, metrics, masks = c.predict(handle_file(str(EXAMPLE)), None, ALL, api_name="/segment")
        rows = {r["model"]: r for r in metrics["models"]}
        assert "error" in rows["fpn"] and "error" in rows["unet"]
        # the served PSPNet slices axially: the example's 160 axial slices (130 sagittal ones before 2026-12-06)
        assert "error" not in rows["pspnet"] and rows["pspnet"]["volume_ml"] > 10 and rows["pspnet"]["slices"] == 160
        assert len([f for f in masks if f.endswith(".nii.gz")]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_slider_uses_cached_predictions(monkeypatch):
    """Moving any plane renders from the session's predictions; the models never run again."""
    from lasegm.predict import Segmenter

    app = demo_module("app")
    state = app.segment(str(EXAMPLE), str(EXAMPLE_LABEL), "unet", progress=lambda *a, **k: None)[0]
    monkeypatch.setattr(Segmenter, "probabilities", lambda *a, **k: pytest.fail("model ran during slider moves"))
    for z in range(0, state["image"].shape[2], 13):
        for mode in ("overlay", "contour", "error map"):
            planes = app.render(state, z, z, z, mode, 0.5, None, None)
            assert len(planes) == 3 and all(p.shape[2] == 3 for p in planes)


def _browser(pw):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (.ci/run installs it)"
    return pw.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def _src(page, plane):
    return page.evaluate(f"() => {{ const i = document.querySelector('#view-{plane} img'); return i && i.src; }}")


def test_real_browser_three_planes_3d_view_sliders_and_honest_state(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page()
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_text("la_003_image.nii.gz").first.click()
        page.wait_for_function("() => document.querySelector('#view-axial img')", timeout=60_000)
        assert "press Segment" in page.locator("#results").inner_text()  # the scan previews at once
        preview = _src(page, "axial")
        page.get_by_role("button", name="Segment").click()
        page.wait_for_function("src => { const i = document.querySelector('#view-axial img'); "
                               "return i && i.src !== src; }", arg=preview, timeout=120_000)
        page.locator("#mesh-pred canvas").first.wait_for(state="visible", timeout=60_000)  # the 3D atrium
        assert "3D Dice" in page.locator("#results").inner_text()
        for plane in ("axial", "coronal", "sagittal"):  # each plane has its own slice position
            before = _src(page, plane)
            assert before
            page.locator(f"#slider-{plane} input[type=range]").fill("20")
            page.wait_for_function(f"src => {{ const i = document.querySelector('#view-{plane} img'); "
                                   "return i && i.src !== src; }", arg=before, timeout=30_000)
        # a click on the axial picture moves the coronal and sagittal planes through that point
        sliders = {p: f"#slider-{p} input[type=range]" for p in ("coronal", "sagittal")}
        before = {p: _src(page, p) for p in sliders}
        image = page.locator("#view-axial img")
        box = image.bounding_box()
        image.click(position={"x": box["width"] * 0.42, "y": box["height"] * 0.6})
        for plane, slider in sliders.items():
            page.wait_for_function(f"src => {{ const i = document.querySelector('#view-{plane} img'); "
                                   "return i && i.src !== src; }", arg=before[plane], timeout=30_000)
            assert page.locator(slider).input_value() != "20"
        page.screenshot(path=str(Path(os.environ.get("LASEGM_SCREENSHOT_DIR", "/tmp")) / "demo.png"), full_page=True)
        # another example: the previous patient's result goes at once; its scan previews instead
        page.get_by_text("la_019_image.nii.gz").first.click()
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('press Segment')",
                               timeout=60_000)
        assert "3D Dice" not in page.locator("#results").inner_text()
        page.wait_for_timeout(500)  # a toast still on its way
        # scan, label and axes change in one event: never a preview of the new scan with the old label
        assert not any("label shape" in t for t in page.locator(".toast-body").all_inner_texts())
        # a broken upload: a message, and no image of the scan before it
        bad = tmp_path / "broken.nii.gz"
        bad.write_bytes(b"\x1f\x8b not a scan")
        page.locator("#scan-file button[aria-label=Clear]").click()
        page.wait_for_function("() => !document.querySelector('#view-axial img')", timeout=30_000)
        page.locator("#scan-file input[type=file]").set_input_files(str(bad))
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('Cannot show')",
                               timeout=60_000)
        assert not _src(page, "axial") and not _src(page, "coronal")
        browser.close()


def test_phone_width_layout_stacks_instead_of_squeezing(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page(viewport={"width": 430, "height": 900})
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_text("la_003_image.nii.gz").first.click()
        page.get_by_role("button", name="Segment").click()
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('3D Dice')",
                               timeout=120_000)
        for plane in ("axial", "coronal", "sagittal"):
            box = page.locator(f"#view-{plane}").bounding_box()
            assert box["width"] >= 300, f"{plane} view squeezed to {box['width']:.0f} px"
        page_width = page.evaluate("() => document.documentElement.scrollWidth")
        assert page_width <= 432, f"the page scrolls sideways ({page_width} px)"
        table = page.evaluate("() => { const t = document.querySelector('#results-table'); "
                              "return [t.parentElement.clientWidth, t.parentElement.scrollWidth]; }")
        assert table[0] <= 430  # the table scrolls inside its own box when wider
        page.screenshot(path=str(Path(os.environ.get("LASEGM_SCREENSHOT_DIR", "/tmp")) / "demo-phone.png"),
                        full_page=True)
        browser.close()


def test_space_folder_is_a_valid_gradio_space(tmp_path):
    import yaml

    build_space = demo_module("build_space")

    out = build_space.build(tmp_path / "space")
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert all((out / f).exists() for f in ("app.py", "lasegm/viewer.py", "lasegm/predict.py"))
    card = (out / "README.md").read_text()
    for needed in ("CC-BY-SA 4.0", "Intended use", "Not for clinical use", "Limitations", "cross-validation"):
        assert needed in card
    for arch in ("pspnet", "fpn", "unet"):
        cv = json.loads((CHECKPOINTS / arch / "config.json").read_text())["cv"]
        assert f"{cv['oof_dice_3d_mean']:.3f}" in card
    from lasegm.checkpoint import model_folders

    for arch in ("pspnet", "fpn", "unet"):  # a multi-view checkpoint: each view's weights
        for folder in model_folders(CHECKPOINTS / arch):
            assert (out / "checkpoints" / folder.relative_to(CHECKPOINTS) / "model.safetensors").exists(), folder
    assert list((out / "examples").glob("*_image.nii.gz"))
    reqs = (out / "requirements.txt").read_text()
    assert "torch==" in reqs and "onnxruntime==" in reqs and "trimesh==" in reqs
    assert "pytest" not in reqs and "-e ." not in reqs and "lasegm" not in reqs and "wandb" not in reqs


def test_bundled_example_shows_the_same_dice_as_the_full_scan(client, real_data):
    """The example (cropped to 200 mm) is preprocessed exactly like the full scan (as `lasegm predict` reads it);
    the preprocessing is every model's, so one model shows it."""
    from gradio_client import handle_file

    from lasegm.data import find_cases, load_case
    from lasegm.predict import load_segmenter

    full = load_case(next(c for c in find_cases(real_data) if c.case_id == "la_003"))
    *_, metrics, _ = client.predict(handle_file(str(EXAMPLE)), handle_file(str(EXAMPLE_LABEL)), "unet",
                                    api_name="/segment")
    assert [row["model"] for row in metrics["models"]] == ["unet"]
    for row in metrics["models"]:
        reference = dice(load_segmenter(CHECKPOINTS / row["model"]).segment(full), full.label)
        assert row["dice_3d"] == pytest.approx(reference, abs=6e-4), row["model"]


def test_upload_in_another_voxel_orientation_gets_the_same_answer_on_its_own_grid(client, tmp_path):
    from gradio_client import handle_file

    img, lab = nib.load(str(EXAMPLE)), nib.load(str(EXAMPLE_LABEL))
    flip = np.array([[0, -1], [1, 1], [2, 1]], dtype=float)  # left-right voxel axis reversed, affine consistent
    scan, label = tmp_path / "flipped.nii.gz", tmp_path / "flipped_label.nii.gz"
    nib.save(img.as_reoriented(flip), str(scan))
    nib.save(lab.as_reoriented(flip), str(label))
    *_, ref, _ = client.predict(handle_file(str(EXAMPLE)), handle_file(str(EXAMPLE_LABEL)), "unet",
                                api_name="/segment")
    *_, metrics, masks = client.predict(handle_file(str(scan)), handle_file(str(label)), "unet",
                                        api_name="/segment")
    assert metrics["models"][0]["dice_3d"] == ref["models"][0]["dice_3d"]
    mask = nib.load(masks[0])
    np.testing.assert_allclose(mask.affine, nib.load(str(scan)).affine)  # opens over the uploaded file
    assert dice(np.asarray(mask.dataobj), np.asarray(nib.load(str(label)).dataobj)) == pytest.approx(
        ref["models"][0]["dice_3d"], abs=1e-3)


def test_implausible_result_is_flagged_not_refused(tmp_path):
    """A scan too small to hold an atrium (32 x 32 x 4 voxels = 8.8 mL in all): any mask is implausible."""
    app = demo_module("app")

    image, _ = synthetic_volume((32, 32, 4))
    scan = write_nifti(tmp_path / "tiny.nii.gz", image)
    *_, table, metrics, files = app.segment(str(scan), None, "pspnet", progress=lambda *a, **k: None)
    row = metrics["models"][0]
    assert any(w.startswith(("no atrium found", "implausible atrium volume")) for w in row["warnings"])
    assert {"empty", "volume"} & set(row["flags"]) and len(row["flags"]) == len(row["warnings"])
    assert all(w in table for w in row["warnings"]) and f"<td>{', '.join(row['flags'])}</td>" in table  # beside it
    assert len([f for f in files if f.endswith(".nii.gz")]) == 1  # the result is still there to inspect


def test_a_click_on_any_panel_finds_the_voxel_under_it():
    """voxel_at inverts the drawing: caption bar, side-by-side panels, physical zoom, upside-down rows."""
    shape, spacing = (40, 30, 12), (0.8, 1.1, 2.5)
    mask = np.zeros(shape, np.uint8)
    state = {"image": np.random.default_rng(0).normal(size=shape).astype(np.float32), "spacing": spacing,
             "label": None, "masks": {"unet": mask, "fpn": mask}, "names": {}, "window": (-1.0, 1.0)}
    for plane, index in (("axial", 5), ("coronal", 17), ("sagittal", 33)):
        picture = viewer.render_plane(state, plane, index)
        axis = viewer.plane_axis(plane)
        keep = [a for a in range(3) if a != axis]
        col_mm, row_mm = viewer.plane_spacing(spacing, plane)
        rows, cols = viewer.zoom_indices((shape[keep[1]], shape[keep[0]]), col_mm, row_mm)
        assert picture.shape[0] == viewer.CAPTION_PX + len(rows)
        assert picture.shape[1] == 2 * len(cols) + viewer.PANEL_GAP
        for a, b in ((0, 0), (shape[keep[0]] - 1, shape[keep[1]] - 1), (7, 3)):
            c = int(np.flatnonzero(cols == a)[0])
            r = int(np.flatnonzero(rows == shape[keep[1]] - 1 - b)[0])
            expected = [0, 0, 0]
            expected[axis], expected[keep[0]], expected[keep[1]] = index, a, b
            for panel in (0, 1):  # either model's panel
                x = c + panel * (len(cols) + viewer.PANEL_GAP)
                assert viewer.voxel_at(state, plane, index, x, r + viewer.CAPTION_PX) == tuple(expected)
        assert viewer.voxel_at(state, plane, index, 3, 5) is None  # the caption
        assert viewer.voxel_at(state, plane, index, len(cols) + 2, 100) is None  # the gap between panels


def test_slices_are_shown_at_their_physical_aspect():
    """Voxels of 1 x 2 mm are drawn twice as tall as wide (rows are the second voxel axis)."""
    panel = np.zeros((50, 100, 3), np.uint8)  # 50 rows (y) x 100 columns (x)
    shown = viewer.physical_zoom(panel, 1.0, 2.0)  # x: 1 mm, y: 2 mm -> 100 mm x 100 mm
    assert shown.shape[0] == shown.shape[1] >= viewer.DISPLAY_PX
    assert viewer.plane_spacing((0.7, 0.8, 2.5), "sagittal") == (0.8, 2.5)


def _path(value) -> str:
    while isinstance(value, dict):  # a component update comes back as {"value": ...}, a file as {"path": ...}
        value = value.get("value") or value.get("path")
    return value


def read_obj(path) -> tuple[np.ndarray, np.ndarray]:
    lines = Path(path).read_text().splitlines()
    verts = np.array([[float(v) for v in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    faces = np.array([[int(i.split("/")[0]) - 1 for i in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    return verts, faces


def test_3d_meshes_enclose_the_reported_atrium_volume(client):
    """The surfaces shown in 3D (GLB) and offered for download (OBJ) are closed meshes whose volume is the
    reported atrium mL (within 5 %)."""
    import trimesh
    from gradio_client import handle_file

    *_, mesh_pred, mesh_truth, _, metrics, files = client.predict(
        handle_file(str(EXAMPLE)), handle_file(str(EXAMPLE_LABEL)), "unet", api_name="/segment")
    row = metrics["models"][0]
    objs = {"pred": next(f for f in files if f.endswith("_unet_atrium.obj")),
            "truth": next(f for f in files if f.endswith("_truth_atrium.obj"))}
    for kind, shown, ml in (("pred", mesh_pred, row["volume_ml"]), ("truth", mesh_truth, row["true_volume_ml"])):
        verts, faces = read_obj(objs[kind])
        assert len(verts) > 1000 and faces.max() < len(verts)
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 2).all(), "the surface is not closed"
        a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
        assert abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6000 == pytest.approx(ml, rel=0.05)
        assert _path(shown).endswith(".glb")
        glb = trimesh.load(_path(shown), force="mesh")
        assert abs(glb.volume) / 1000 == pytest.approx(ml, rel=0.05)


def test_constant_scan_previews_with_valid_window_sliders(tmp_path):
    """A blank volume (all voxels equal) still gets a preview; no slider ends up with minimum == maximum."""
    app = demo_module("app")

    scan = write_nifti(tmp_path / "blank.nii.gz", np.full((20, 20, 6), 7, np.int16))
    out = app.preview(str(scan), None)
    updates = [o for o in out if isinstance(o, dict) and "minimum" in o]
    assert out[0] is not None and updates
    assert all(u["minimum"] < u["maximum"] for u in updates)


# ---------------------------------------------------------------- anatomy: planes by name, the axes choice

def _demo():
    return demo_module("app"), viewer


def _marked_scan() -> tuple[np.ndarray, np.ndarray, tuple]:
    """A scan stored RAS (1.0 x 1.2 x 1.5 mm) with a bright marker at the patient's right, anterior and superior:
    (data, affine, the marker's (R, A, S) voxel ranges)."""
    shape = (40, 36, 30)
    data = np.random.default_rng(1).normal(300, 20, shape).astype(np.int16)
    marker = (slice(30, 36), slice(26, 32), slice(22, 27))  # high R, high A, high S
    data[marker] = 2000
    affine = np.diag([1.0, 1.2, 1.5, 1.0])
    affine[:3, 3] = (-20.0, 10.0, 30.0)
    return data, affine, marker


def _marker_at(state, plane: str, index: int, margin: int = 20) -> tuple[float, float] | None:
    """Centre (column, row) of the marker on a plane's picture as fractions of the panel's size (the caption bar
    and a margin along the edges, where the direction letters are, left out); None where it is not in the cut."""
    _, viewer = _demo()
    picture = viewer.render_plane(state, plane, index, level=1000, width=1000)  # the marker white, the rest black
    panel = picture[viewer.CAPTION_PX:]
    inner = np.zeros(panel.shape[:2], bool)
    inner[margin:-margin, margin:-margin] = True
    rows, cols = np.nonzero((panel == 255).all(axis=2) & inner)
    if not len(rows):
        return None
    return cols.mean() / panel.shape[1], rows.mean() / panel.shape[0]


def test_planes_are_named_by_anatomy_whatever_the_storage(tmp_path, monkeypatch):
    """The same scan stored RAS and ASR (consistent affines): identical pictures; "Axial" is the plane whose
    normal is S/I, drawn radiologically (R on the screen's left, A at the top), with its letters at its edges."""
    app, viewer = _demo()
    data, affine, marker = _marked_scan()
    ras = nib.Nifti1Image(data, affine)
    asr = ras.as_reoriented(nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                                           nib.orientations.axcodes2ornt("ASR")))
    assert "".join(nib.aff2axcodes(asr.affine)) == "ASR" and asr.shape == (36, 30, 40)
    paths = {}
    for name, img in (("ras", ras), ("asr", asr)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(img, str(paths[name]))
    captions = []
    monkeypatch.setattr(viewer, "captioned", lambda picture, caption, f=viewer.captioned: (
        captions.append(caption), f(picture, caption))[1])
    shown = {name: app.preview(str(path), None, "header") for name, path in paths.items()}
    states = {name: out[0] for name, out in shown.items()}
    for name in paths:
        assert states[name]["image"].shape == (40, 36, 30)  # display grid: R/L, A/P, S/I
        assert all(p is not None for p in shown[name][7:10])
    for before, after in zip(shown["ras"][7:10], shown["asr"][7:10]):  # the three previews
        np.testing.assert_array_equal(before, after)
    assert [c.split(" - ")[1].split(" ")[0] for c in captions[:3]] == ["Axial", "Coronal", "Sagittal"]

    s_marker = range(marker[2].start, marker[2].stop)
    for name, state in states.items():
        for index in range(state["image"].shape[2]):  # the axial slider steps inferior -> superior
            assert (_marker_at(state, "axial", index) is not None) == (index in s_marker), (name, index)
            np.testing.assert_array_equal(viewer.render_plane(state, "axial", index),
                                          viewer.render_plane(states["ras"], "axial", index))
        col, row = _marker_at(state, "axial", 24)
        assert col < 0.5 and row < 0.5, "axial: the patient's right on the left, anterior at the top"
        col, row = _marker_at(state, "coronal", 28)
        assert col < 0.5 and row < 0.5, "coronal: the patient's right on the left, superior at the top"
        col, row = _marker_at(state, "sagittal", 6)  # display axis 0 runs toward the patient's left
        assert col > 0.5 and row < 0.5, "sagittal: anterior on the right, superior at the top"
    assert viewer.plane_letters("axial") == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert viewer.plane_letters("coronal") == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert viewer.plane_letters("sagittal") == {"left": "P", "right": "A", "top": "S", "bottom": "I"}

    # the letters are drawn over the picture, in four small boxes mid-edge; not a pixel else moves
    plain = viewer.render_plane  # with the letters left out, for comparison
    lettered = plain(states["asr"], "axial", 24)
    monkeypatch.setattr(viewer, "lettered", lambda picture, plane: picture)
    changed = (plain(states["asr"], "axial", 24) != lettered).any(axis=2)[viewer.CAPTION_PX:]
    h, w = changed.shape
    near = {"left": changed[h // 2 - 15:h // 2 + 15, :25], "right": changed[h // 2 - 15:h // 2 + 15, -25:],
            "top": changed[:25, w // 2 - 15:w // 2 + 15], "bottom": changed[-25:, w // 2 - 15:w // 2 + 15]}
    assert all(box.sum() > 10 for box in near.values()), {k: int(v.sum()) for k, v in near.items()}
    assert changed.sum() == sum(int(box.sum()) for box in near.values())

    # the page's words: views, sliders
    blocks = app.build_app()
    components = {b.elem_id: b for b in blocks.blocks.values() if getattr(b, "elem_id", None)}
    for plane, (low, high) in (("axial", ("inferior", "superior")), ("coronal", ("posterior", "anterior")),
                               ("sagittal", ("right", "left"))):
        assert components[f"view-{plane}"].label == plane.capitalize()
        assert components[f"slider-{plane}"].label == f"{plane.capitalize()} slice ({low} \u2192 {high})"


def _release_copy(path: Path, out: Path) -> Path:
    """The example's voxels under a header like the Decathlon Task02 release's (diagonal, RAS, 1.25 x 1.25 x
    1.37 mm): the file as the release ships it."""
    img = nib.load(str(path))
    affine = np.diag([1.25, 1.25, 1.37, 1.0])
    affine[:3, 3] = (40.0, 40.0, 0.0)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), str(out))
    return out


@pytest.mark.slow
def test_release_file_with_the_axes_choice_gets_the_examples_mask_and_without_it_a_warning(tmp_path):
    app, _ = _demo()
    from lasegm.anatomy import has_task02_header

    release = _release_copy(EXAMPLE, tmp_path / "la_003_release.nii.gz")
    release_label = _release_copy(EXAMPLE_LABEL, tmp_path / "la_003_release_label.nii.gz")
    assert has_task02_header(nib.load(str(release)).affine)
    quiet = {"progress": lambda *a, **k: None}
    example = app.segment(str(EXAMPLE), str(EXAMPLE_LABEL), "unet", "header", **quiet)
    declared = app.segment(str(release), str(release_label), "unet", "ASR (Decathlon Task02 file)", **quiet)
    trusted = app.segment(str(release), str(release_label), "unet", "header", **quiet)
    masks = {name: nib.load(next(f for f in out[-1] if f.endswith("_mask.nii.gz")))
             for name, out in (("example", example), ("declared", declared), ("trusted", trusted))}
    np.testing.assert_array_equal(np.asarray(masks["declared"].dataobj), np.asarray(masks["example"].dataobj))
    np.testing.assert_allclose(masks["declared"].affine, nib.load(str(release)).affine)  # opens over the file
    assert declared[-2]["models"][0]["dice_3d"] == example[-2]["models"][0]["dice_3d"] > 0.7
    for a, b in zip(example[7:10], declared[7:10]):  # the same pictures
        np.testing.assert_array_equal(a, b)
    assert declared[-2]["axes"] == "ASR" and example[-2]["axes"] == "header"

    # the header trusted: the result stands, beside a warning that names the choice to make
    for out in (example, declared):
        assert out[-2]["header_warning"] is None and "Warning (voxel axes)" not in out[-3]
    warning = trusted[-2]["header_warning"]
    assert warning and "Task02" in warning and "Voxel axes" in warning and "ASR (Decathlon Task02 file)" in warning
    assert "--axes" not in warning
    assert f"Warning (voxel axes):</b> {warning}" in trusted[-3] and "3D Dice" in trusted[-3]
    assert trusted[-2]["models"][0]["dice_3d"] < 0.5  # read across the wrong axes, the mask is wrong

    # and on preview: a toast (a Python warning outside a server) and the same line in the results area
    with pytest.warns(UserWarning, match="Decathlon Task02_Heart release"):
        shown = app.preview(str(release), None, "header")
    assert warning in shown[-3] and "press <b>Segment</b>" in shown[-3]
    assert "Warning" not in app.preview(str(release), None, "ASR")[-3]


@pytest.mark.parametrize("axes", ["XYZ", "RAR", "RASL", "ax"])
def test_an_invalid_axes_choice_is_a_one_line_message(axes, client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Voxel axes: .*give three letters, one of R/L, A/P and S/I each") as error:
        client.predict(handle_file(str(EXAMPLE)), None, "unet", axes, api_name="/segment")
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)
    shown = client.predict(handle_file(str(EXAMPLE)), None, axes, api_name="/preview")
    assert "Cannot show this scan" in shown[-3] and "give three letters" in shown[-3]


def test_the_axes_choice_takes_any_valid_code_and_its_labels():
    app, _ = _demo()

    assert app.declared_axes("lps") == "LPS" and app.declared_axes(" ASR ") == "ASR"
    assert app.declared_axes("ASR (Decathlon Task02 file)") == "ASR"
    assert app.declared_axes("header") is app.declared_axes("from the header") is app.declared_axes(None) is None


# ---------------------------------------------------------------- a DICOM series in; a result only beside its input

def _zip_series(folder: Path, archive: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    return archive


def _example_as_dicom_zip(tmp_path: Path) -> Path:
    """The example patient (stored with its true anatomy) as a scanner-like series (LPS, random file names, nested
    folders, a stray text file), zipped as a user would."""
    from test_dicom import write_series

    img = nib.load(str(EXAMPLE))
    write_series(np.asarray(img.dataobj).astype(np.float32), img.affine, tmp_path / "series" / "la_003_dicom")
    return _zip_series(tmp_path / "series", tmp_path / "la_003_dicom.zip")


def test_a_zipped_dicom_series_gets_the_mask_of_its_nifti(client, tmp_path):
    from gradio_client import handle_file

    archive = _example_as_dicom_zip(tmp_path)
    *_, table, metrics, files = client.predict(handle_file(str(archive)), None, "unet", api_name="/segment")
    *_, ref, ref_files = client.predict(handle_file(str(EXAMPLE)), None, "unet", api_name="/segment")
    mask, expected = nib.load(files[0]), nib.load(ref_files[0])
    assert Path(files[0]).name == "la_003_dicom_unet_mask.nii.gz"
    np.testing.assert_array_equal(np.asarray(mask.dataobj), np.asarray(expected.dataobj))
    np.testing.assert_allclose(mask.affine, expected.affine, atol=1e-3)  # the series' own geometry
    row = metrics["models"][0]
    assert row["volume_ml"] == ref["models"][0]["volume_ml"] > 0 and row["flags"] == []
    assert metrics["input"] == "la_003_dicom.zip"
    assert "QC flags" in table and "<td>none</td>" in table  # the quality checks beside the result


@pytest.mark.parametrize("case, message", [
    ("two series", "bad.zip: 2 DICOM series"),
    ("no dicom", "bad.zip: no DICOM files found"),
    ("not a zip", "bad.zip: unreadable .zip"),
])
def test_a_zip_that_is_not_one_series_gets_one_line(case, message, tmp_path):
    import gradio as gr

    app = demo_module("app")

    image, _ = synthetic_volume((16, 16, 6))
    from test_dicom import write_series

    folder = tmp_path / "content"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a scan")
    if case == "two series":
        for name in ("a", "b"):
            write_series(image.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]), folder / name)
    archive = tmp_path / "bad.zip"
    if case == "not a zip":
        archive.write_bytes(b"PK not really")
    else:
        _zip_series(folder, archive)
    with pytest.raises(gr.Error, match=message) as error:
        app.load_inputs(str(archive), None)
    text = str(error.value)
    assert "\n" not in text and str(tmp_path) not in text and "lasegm-demo-zip" not in text
    if case == "two series":
        assert "upload a .zip of one series" in text
    with pytest.warns(UserWarning, match=message):  # the preview: a toast, and the same line where results go
        shown = app.preview(str(archive), None)
    assert shown[0] is None and "Cannot show this scan" in shown[-3]


def test_a_rejected_upload_leaves_nothing_of_the_scan_before_it(tmp_path):
    """Every slider its own update (gradio consumes an update's value: one dict shared by three sliders left two
    with the old scan's positions), the 3D views and their titles cleared, the window sliders off."""
    import warnings

    app = demo_module("app")

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not a scan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = app.preview(str(bad), None)
    sliders, meshes = out[4:7], out[12:14]
    assert len({id(s) for s in sliders}) == 3
    assert all(s["value"] == 0 and s["maximum"] == 1 and not s["interactive"] for s in sliders)
    assert [m["label"] for m in meshes] == ["3D: predicted atrium", "3D: ground truth"]
    assert all(m["value"] is None for m in meshes) and not out[10]["interactive"] and not out[11]["interactive"]
    assert out[-1] is None and out[-2] is None and "Cannot show this scan" in out[-3]


def test_a_run_whose_input_changed_shows_nothing_and_leaves_no_folder(tmp_path, monkeypatch):
    """The input changes (another upload, an example) while the models run: the run stops and returns no change to
    any output, with a message; a run left alone shows its result. Either way no temporary folder is left."""
    import tempfile
    from types import SimpleNamespace

    import gradio as gr

    app = demo_module("app")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    (tmp_path / "tmp").mkdir()
    scan = write_nifti(tmp_path / "scan.nii.gz", synthetic_volume((48, 48, 10))[0])
    tab = SimpleNamespace(session_hash="tab-1")
    app.preview(str(scan), None, "header", request=tab)

    def change_input(*args, **kwargs):  # what the page sends when the user picks an example mid-run
        app.preview(str(EXAMPLE), str(EXAMPLE_LABEL), "header", request=tab)

    with pytest.warns(UserWarning, match="The result for 'scan.nii.gz' was discarded: the input changed"):
        out = app.segment(str(scan), None, "pspnet", "header", progress=change_input, request=tab)
    assert len(out) == app.N_OUTPUTS and all(o == gr.skip() for o in out)
    assert app.input_token(str(scan), None) != app.input_token(str(EXAMPLE), str(EXAMPLE_LABEL))
    assert app.input_token(str(EXAMPLE), None, "header") != app.input_token(str(EXAMPLE), None, "ASR")

    # another tab's input is its own: a run in this tab is shown
    other_tab = SimpleNamespace(session_hash="tab-2")
    out = app.segment(str(scan), None, "pspnet", "header", request=tab,
                      progress=lambda *a, **k: app.preview(str(EXAMPLE), None, "header", request=other_tab))
    assert out[0] is not None and out[-2]["input"] == "scan.nii.gz" and out[-1]
    assert all(Path(f).is_file() and Path(f).is_relative_to(tmp_path / "gradio") for f in out[-1])
    assert not list((tmp_path / "tmp").iterdir()), "a run left a temporary folder behind"


WATCH_JS = """example => {
  // from now on: whenever the scan shown is the example, nothing of a result may be beside it
  window.__stale = [];
  const check = () => {
    if (!(document.querySelector('#scan-file')?.innerText || '').includes(example)) return;
    const results = document.querySelector('#results')?.innerText || '';
    const titles = [...document.querySelectorAll('#mesh-pred, #mesh-truth')].map(e => e.innerText).join(' ');
    const downloads = document.querySelectorAll('#downloads a').length;
    if (results.includes('3D Dice') || results.includes('Atrium volume') || titles.includes('mL') || downloads)
      window.__stale.push({results: results.slice(0, 100), titles, downloads});
  };
  window.__watch = new MutationObserver(check);
  window.__watch.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def test_real_browser_a_result_never_shows_beside_another_input(server, tmp_path):
    """Issue 29: "all three" started on an uploaded scan (a zipped DICOM series), an example picked while it runs:
    the run's planes, 3D views, table and downloads never appear beside the example; the user is told the result
    was discarded. Then a run on the example shows its own result, and a rejected upload after it leaves nothing of
    it (3D titles, slider positions)."""
    from playwright.sync_api import sync_playwright

    archive = _example_as_dicom_zip(tmp_path)
    with sync_playwright() as pw:
        browser = _browser(pw)
        page = browser.new_page()
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#scan-file input[type=file]").set_input_files(str(archive))
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('press Segment')",
                               timeout=60_000)
        page.get_by_text("All three side by side").click()
        page.get_by_role("button", name="Segment").click()
        page.wait_for_function("() => /slice \\d+\\/\\d+/.test(document.body.innerText)", timeout=60_000)  # in flight
        page.evaluate(WATCH_JS, "la_019")
        page.get_by_text("la_019_image.nii.gz").first.click()
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('press Segment') "
                               "&& document.querySelector('#scan-file')?.innerText.includes('la_019')", timeout=60_000)
        page.locator(".toast-body", has_text="was discarded: the input changed").first.wait_for(timeout=120_000)
        assert "la_003_dicom.zip" in page.locator(".toast-body").first.inner_text()
        page.wait_for_timeout(1000)  # anything still on its way
        stale = page.evaluate("() => { window.__watch.disconnect(); return window.__stale; }")
        assert stale == [], f"the uploaded scan's result appeared beside the example: {stale[:3]}"
        assert "press Segment" in page.locator("#results").inner_text()

        # the example's own run: its result, beside it
        page.get_by_text("U-Net", exact=True).click()
        page.get_by_role("button", name="Segment").click()
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('3D Dice')",
                               timeout=120_000)
        assert "la_019_image_unet_mask" in page.locator("#downloads").inner_text()
        assert "QC flags" in page.locator("#results").inner_text()
        page.locator("#mesh-pred", has_text="mL").wait_for(timeout=30_000)
        page.locator("#slider-sagittal input[type=range]").fill("70")
        page.wait_for_timeout(500)

        # a rejected upload: nothing of the example's result, no slider left at its old position
        bad = tmp_path / "broken.nii.gz"
        bad.write_bytes(b"\x1f\x8b not a scan")
        page.locator("#scan-file button[aria-label=Clear]").click()
        page.locator("#scan-file input[type=file]").set_input_files(str(bad))
        page.wait_for_function("() => document.querySelector('#results')?.innerText.includes('Cannot show')",
                               timeout=60_000)
        for plane in ("axial", "coronal", "sagittal"):
            slider = page.locator(f"#slider-{plane} input[type=range]")
            assert (slider.input_value(), slider.get_attribute("max")) == ("0", "1"), plane
        for view in ("#mesh-pred", "#mesh-truth"):
            assert "mL" not in page.locator(view).inner_text()
        assert not page.locator("#downloads a").count() and not _src(page, "axial")
        browser.close()
