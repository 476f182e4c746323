"""Multi-view checkpoints (view aggregation): models of one architecture slicing along different anatomical planes,
published as one folder and served from it by predict, evaluate and ONNX, the mean of their probabilities on the
scan's own grid."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, affine_for, synthetic_volume, write_nifti

from lasegm import LasegmError
from lasegm.checkpoint import model_folders, read_checkpoint_config, read_views
from lasegm.cli import main
from lasegm.data import find_cases, load_volume
from lasegm.models import build_model, model_kwargs, save_checkpoint
from lasegm.predict import VIEW_MIN_PROBABILITY, Ensemble, Segmenter, load_segmenter, open_slices, slice_maxima
from lasegm.preprocess import PLANE_ORIENTATIONS, Preprocessing, plane_of, zscore_clipped


def test_each_plane_and_their_mean_give_back_the_scans_grid_exactly():
    """Slice a known volume along each plane and restore it (a 1-mm scan, the field of view covering it, no
    resampling): each view, and their mean, is the normalised scan on its own grid, voxel for voxel."""
    image, _ = synthetic_volume((48, 40, 56))
    affine = affine_for(spacing=(1.0, 1.0, 1.0))
    lo, hi, mean, std = zscore_clipped(image.astype(np.float32))
    expected = (np.clip(image.astype(np.float32), lo, hi) - mean) / std
    restored = []
    for plane, orientation in PLANE_ORIENTATIONS.items():
        pre = Preprocessing(image_size=64, fov_mm=64.0, context=0, orientation=orientation)
        slices, geometry = pre.prepare(image, affine)
        assert plane_of(orientation) == plane and slices.shape[1:] == (64, 64)
        assert len(slices) == image.shape["RAS".index(orientation[2])]  # one slice per voxel along its axis
        back = pre.restore(slices, geometry)
        assert back.shape == image.shape
        np.testing.assert_allclose(back, expected, atol=1e-5, err_msg=plane)
        restored.append(back)
    np.testing.assert_allclose(np.mean(restored, axis=0), expected, atol=1e-5)


def _view(folder, orientation, seed):
    kw = model_kwargs("unet", "resnet18", 1, decoder_width=16)
    pre = {"image_size": 32, "fov_mm": 60.0, "context": 0, "orientation": orientation, "version": 3}
    build = build_model("unet", kw)
    for i, p in enumerate(build.parameters()):  # distinct, non-trivial outputs per view
        p.data.normal_(0, 0.05, generator=__import__("torch").Generator().manual_seed(seed + i))
    return save_checkpoint(folder, build, {"arch": "unet", "encoder": "resnet18", "model_kwargs": kw,
                                           "preprocessing": pre, "trained_on": [f"case_{seed}"]})


@pytest.fixture
def views(tmp_path):
    members = [_view(tmp_path / name, orientation, seed)
               for seed, (name, orientation) in enumerate((("a", "RAS"), ("c", "RSA"), ("s", "ASR")))]
    image, _ = synthetic_volume((40, 36, 44))
    write_nifti(tmp_path / "scan.nii.gz", image)
    return members, tmp_path / "scan.nii.gz"


def test_a_second_view_runs_only_on_slices_where_the_first_leaves_the_mean_open(tmp_path):
    """Two views slicing differently: the second is run only on its slices where the first view gives some voxel
    >= VIEW_MIN_PROBABILITY; elsewhere the mean could reach the threshold only where the second is >= 95 % sure
    while the first is < 5 % sure, and only there may the mask differ from the exhaustive mean's."""
    first, second = (Segmenter(_view(tmp_path / name, orientation, seed), device="cpu", backend="torch")
                     for seed, (name, orientation) in enumerate((("a", "RAS"), ("c", "RSA"))))
    first.runner = lambda batch: 20.0 * (batch[:, batch.shape[1] // 2] - 2.0)  # sure on the bright ellipsoid only
    calls = []

    def sure_everywhere(batch):
        calls.append(len(batch))
        return np.full((len(batch), *batch.shape[2:]), 20.0, np.float32)

    second.runner = sure_everywhere
    image, _ = synthetic_volume((40, 36, 44))
    write_nifti(tmp_path / "scan.nii.gz", image)
    vol = load_volume(tmp_path / "scan.nii.gz")
    p1 = Ensemble([first], device="cpu").probabilities(vol)
    full = Ensemble([first, second], exhaustive=True).probabilities(vol)
    assert sum(calls) == 36  # every coronal slice
    calls.clear()
    gated = Ensemble([first, second]).probabilities(vol)
    _, geometry = second.pre.prepare(vol.image, vol.affine)
    opened = open_slices(slice_maxima(p1, geometry), 1.0, 1.0, 1.0 - VIEW_MIN_PROBABILITY)  # 2 views x 0.5
    assert sum(calls) == len(opened) and 0 < len(opened) < 36
    differ = (gated >= 0.5) != (full >= 0.5)
    assert differ.any() and p1[differ].max() < VIEW_MIN_PROBABILITY  # the 0.5 reached only with the second's 1.0
    seen = p1 >= VIEW_MIN_PROBABILITY  # such a voxel lies in an open slice: the second view ran there
    np.testing.assert_allclose(gated[seen], full[seen], atol=1e-6)


def test_skipping_slices_keeps_the_exact_mask_when_model_slices_are_interpolated(tmp_path):
    """Preprocessing version 4 on a scan with 2-mm slices: each scan slice is interpolated from two model slices. A
    network is skipped on a model slice only if every scan slice it reaches is out of the threshold's reach, so the
    mask equals the exhaustive mean's, the third network running on fewer slices."""
    nets = []
    for seed, shift in enumerate((3.0, 2.5, 3.5)):  # the ellipsoid is ~4.8, the rest < 1.7 (normalised)
        folder = _view(tmp_path / f"n{seed}", "RAS", seed)
        config = json.loads((folder / "config.json").read_text())
        config["preprocessing"].update(version=4, resize="fov_cube_isotropic")
        (folder / "config.json").write_text(json.dumps(config))
        net = Segmenter(folder, device="cpu", backend="torch")
        net.runner = lambda batch, shift=shift: 20.0 * (batch[:, batch.shape[1] // 2] - shift)
        nets.append(net)
    image, _ = synthetic_volume((40, 36, 30))
    write_nifti(tmp_path / "scan.nii.gz", image, affine_for(spacing=(1.25, 1.25, 2.0)))
    vol = load_volume(tmp_path / "scan.nii.gz")
    _, geometry = nets[0].pre.prepare(vol.image, vol.affine)
    assert geometry.slice_weights is not None and geometry.depth == 32  # 30 slices of 2 mm, 1.875-mm pixels
    calls = []
    counted = nets[2].runner
    nets[2].runner = lambda batch: calls.append(len(batch)) or counted(batch)
    full = Ensemble(nets, exhaustive=True).segment(vol)
    assert sum(calls) == 32
    calls.clear()
    fast = Ensemble(nets).segment(vol)
    assert 0 < sum(calls) < 32 and full.any()
    np.testing.assert_array_equal(fast, full)
    weights = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # 3 scan slices from 3 model slices
    assert open_slices(np.array([0.0, 1.0, 0.0]), 0.0, 0.5, weights=weights).tolist() == [0, 1]


def test_a_multi_view_member_of_an_ensemble_counts_once_with_its_views_sharing_its_weight(views, tmp_path):
    """The three-architecture ensemble with a multi-view member: the mean of the members, the multi-view one being
    its views' mean (each view weighs 1/2), whether every network runs on every slice or not (each sparse, skipping
    slices between two empty ones, and skipping what the members before it rule out)."""
    members, scan = views
    assert main(["export", "--checkpoint", str(members[0]), str(members[1]), "--out", str(tmp_path / "ac"),
                 "--onnx", "false"]) == 0
    vol = load_volume(scan)
    single, pair = (load_segmenter(f, device="cpu", backend="torch") for f in (members[2], tmp_path / "ac"))
    single.runner = lambda batch: 20.0 * (batch[:, batch.shape[1] // 2] - 2.0)  # sure on the bright ellipsoid only
    p_single, p_pair = (Ensemble(m, exhaustive=True).probabilities(vol) for m in ([single], pair.members))
    expected = (p_single + p_pair) / 2
    both = Ensemble([single, pair], exhaustive=True)
    assert [w for _, w in both.networks] == [1.0, 0.5, 0.5] and len(both.members) == 2
    np.testing.assert_allclose(both.probabilities(vol), expected, atol=1e-6)
    gated = Ensemble([single, pair]).probabilities(vol)  # a skipped view slice counts as 0: never above the mean
    assert (gated <= expected + 1e-6).all()
    # where the first network alone is >= 0.55, the views' slices stay open (the mean could reach 0.5 with them)
    sure = p_single >= 0.5 + VIEW_MIN_PROBABILITY
    assert sure.any()
    np.testing.assert_allclose(gated[sure], expected[sure], atol=1e-6)


def test_multi_view_checkpoint_round_trips_and_serves_the_views_mean(views, tmp_path, monkeypatch):
    members, scan = views
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "checkpoints" / "unet"
    assert main(["export", "--checkpoint", *map(str, members), "--out", str(out), "--largest_component=false",
                 "--onnx=false"]) == 0
    assert main(["export-onnx", "--checkpoint", str(out)]) == 0  # view by view
    config, folders = read_views(out)
    assert config["views"] == ["axial", "coronal", "sagittal"] and config["arch"] == "unet"
    assert [f.name for f in folders] == config["views"] and all((f / "model.onnx").is_file() for f in folders)
    assert config["trained_on"] == ["case_0", "case_1", "case_2"]
    vol = load_volume(scan)
    seg = load_segmenter(out, expected_arch="unet")
    assert seg.backend == "onnx" and seg.trained_on == {"case_0", "case_1", "case_2"} and seg.arch == "unet"
    direct = Ensemble(members, device="cpu", backend="torch", exhaustive=True).probabilities(vol)
    served = seg.probabilities(vol)
    assert served.shape == vol.image.shape
    np.testing.assert_allclose(served, direct, atol=2e-3)  # ONNX Runtime vs PyTorch
    torch_seg = load_segmenter(out, backend="torch")
    assert np.array_equal(torch_seg.segment(vol), seg.post.binarize(direct))  # gated == every slice, same mask

    # predict, from the folder, unchanged; a views folder is also a member of an ensemble, counted once
    assert main(["--quiet", "predict", "--checkpoint", str(out), "--input", str(scan), "--output", "m.nii.gz"]) == 0
    assert nib.load("m.nii.gz").shape == vol.image.shape
    both = load_segmenter([out, members[0]], backend="torch")
    np.testing.assert_allclose(both.probabilities(vol), (direct + Segmenter(members[0], backend="torch")
                                                          .probabilities(vol)) / 2, atol=1e-5)
    # re-published as it is
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "again"), "--onnx=false"]) == 0
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again == json.loads((out / "config.json").read_text())


def test_a_checkpoint_records_its_unsure_limit_and_predict_judges_with_it(views, tmp_path, capsys):
    """A mean of views is softer than one model: its checkpoint records the quality check's limit, kept when it is
    re-published; a built ensemble takes its members' largest; a limit that is not a number > 0 is one line."""
    members, _ = views
    out = tmp_path / "mv"
    assert load_segmenter(members[0], backend="torch").unsure_limit == 0.45  # none recorded: lasegm's default
    assert main(["export", "--checkpoint", *map(str, members[:2]), "--out", str(out), "--onnx=false",
                 "--unsure_limit", "0.8"]) == 0
    assert json.loads((out / "config.json").read_text())["quality"] == {"unsure_limit": 0.8}
    assert load_segmenter(out, backend="torch").unsure_limit == 0.8
    assert load_segmenter([out, members[2]], backend="torch").unsure_limit == 0.8
    assert main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "again"), "--onnx=false"]) == 0
    assert load_segmenter(tmp_path / "again", backend="torch").unsure_limit == 0.8
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(members[0]), "--out", str(tmp_path / "bad"), "--onnx=false",
                 "--unsure_limit", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unsure_limit must be a number > 0" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    # a record edited by hand is refused when the checkpoint loads, before any scan runs
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "quality": {"unsure_limit": "high"}}))
    with pytest.raises(LasegmError, match="quality.unsure_limit must be a number > 0, got 'high'"):
        load_segmenter(out, backend="torch")


def test_a_missing_or_mislabelled_view_is_one_line_naming_it(views, tmp_path, capsys):
    members, scan = views
    out = tmp_path / "unet"
    assert main(["export", "--checkpoint", *map(str, members[:2]), "--out", str(out), "--onnx=false"]) == 0
    (out / "coronal" / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), "--input", str(scan), "--output", str(tmp_path / "m.nii")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "coronal" in err and "model.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "m.nii").exists()
    shutil.rmtree(out / "coronal")
    with pytest.raises(LasegmError, match="view 'coronal'"):
        read_views(out)
    # a view folder that slices along another plane than its name says
    shutil.copytree(out / "axial", out / "coronal")
    with pytest.raises(LasegmError, match="slicing axially"):
        read_views(out)
    with pytest.raises(LasegmError, match="multi-view checkpoint"):
        read_checkpoint_config(out)  # one model's reader points at the views
    # two views of one plane, or of two architectures, are refused before anything is written
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(members[0]), str(members[0]), "--out", str(tmp_path / "x")]) == 2
    assert "distinct planes" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_multi_view_checkpoint_carries_its_views_out_of_fold_table(views, tmp_path, capsys):
    members, _ = views
    rows = [{"case": f"case_{i}", "dice": 0.9 + i / 100, "hd95_mm": 3.0, "fold": i} for i in range(3)]
    table = {"format": "lasegm.oof/1", "cv": "unet-2views", "folds_file": "splits/cv5.json", "folds_sha256": "ab",
             "patients": 3, "per_patient": rows, "folds": [{"fold": i} for i in range(3)],
             "summary": {"dice": {"mean": 0.91, "std": 0.01, "min": 0.9}, "hd95_mm": {"mean": 3.0}},
             "recipe": {"ensemble": ["unet-axial", "unet-coronal"]},
             "postprocessing": {"threshold": 0.5, "largest_component": True, "flip_tta": False}}
    (tmp_path / "oof.json").write_text(json.dumps(table))
    out = tmp_path / "unet"
    assert main(["export", "--checkpoint", *map(str, members[:2]), "--out", str(out), "--onnx=false",
                 "--cv_table", str(tmp_path / "oof.json")]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["cv"]["name"] == "unet-2views" and config["cv"]["oof_dice_3d_mean"] == 0.91
    assert config["postprocessing"] == table["postprocessing"] and (out / "cv-oof.json").is_file()
    # post-processing the table was not scored with, or a table of three views for two, is refused
    capsys.readouterr()
    assert main(["export", "--checkpoint", *map(str, members[:2]), "--out", str(tmp_path / "x"), "--onnx=false",
                 "--cv_table", str(tmp_path / "oof.json"), "--largest_component=false"]) == 2
    assert "scored with post-processing" in capsys.readouterr().err
    table["recipe"]["ensemble"].append("unet-sagittal")
    (tmp_path / "oof.json").write_text(json.dumps(table))
    assert main(["export", "--checkpoint", *map(str, members[:2]), "--out", str(tmp_path / "x"), "--onnx=false",
                 "--cv_table", str(tmp_path / "oof.json")]) == 2
    assert "not of these views" in capsys.readouterr().err and not (tmp_path / "x").exists()
    # a table of some folds only (`lasegm cv --ensemble --folds`) is not the views' accuracy
    table["recipe"]["ensemble"].pop()
    (tmp_path / "oof.json").write_text(json.dumps({**table, "partial": True, "folds_scored": [0, 1]}))
    assert main(["export", "--checkpoint", *map(str, members[:2]), "--out", str(tmp_path / "x"), "--onnx=false",
                 "--cv_table", str(tmp_path / "oof.json")]) == 2
    assert "scores folds [0, 1] only" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_multi_view_checkpoint_of_real_models_segments_a_real_patient(real_data, tmp_path, monkeypatch):
    """The served U-Net's first view (a real trained network) with a sagittal view that says 0.5 everywhere (every
    weight zero): their mean reaches the threshold exactly where the real view's probability does, so the multi-view
    checkpoint must give that view's own mask on a real patient's grid, through export, ONNX Runtime and the CLI."""
    monkeypatch.chdir(tmp_path)
    kw = model_kwargs("unet", "resnet18", 3, decoder_width=16)
    neutral = build_model("unet", kw)
    for p in neutral.parameters():
        p.data.zero_()
    sagittal = save_checkpoint(tmp_path / "sagittal", neutral, {
        "arch": "unet", "encoder": "resnet18", "model_kwargs": kw,
        "preprocessing": {"image_size": 64, "fov_mm": 200.0, "context": 1, "orientation": "ASR", "version": 3}})
    served = model_folders(REPO / "checkpoints" / "unet")[0]
    plane = plane_of(read_checkpoint_config(served)["preprocessing"]["orientation"])
    assert plane != "sagittal"
    assert main(["export", "--checkpoint", str(served), str(sagittal), "--out", "views"]) == 0
    assert read_views("views")[0]["views"] == [plane, "sagittal"]
    case = next(c for c in find_cases(real_data) if c.case_id == "la_003")
    for checkpoint, out in ((served, "unet.nii.gz"), ("views", "views.nii.gz")):
        assert main(["--quiet", "predict", "--checkpoint", str(checkpoint), "--input", str(case.image),
                     "--axes", case.axes, "--output", out]) == 0
    views, unet, stored = nib.load("views.nii.gz"), nib.load("unet.nii.gz"), nib.load(str(case.image))
    assert views.shape == stored.shape
    np.testing.assert_allclose(views.affine, stored.affine)
    got, expected = np.asarray(views.dataobj), np.asarray(unet.dataobj)
    assert expected.sum() > 10_000 and np.array_equal(got, expected)
