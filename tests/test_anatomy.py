"""Anatomy, not the header: the Task02 release's voxel axes (ASR, though its headers say RAS), `--axes` for a file
whose header is wrong, format-1 checkpoints read in anatomy, and models of different planes averaged."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, TEST_PREPROCESSING, affine_for, make_dataset, synthetic_volume, write_nifti

from lasegm import LasegmError
from lasegm.anatomy import (TASK02_VOXEL_AXES, axis_codes, has_task02_header, parse_axes, relabel_affine,
                            task02_header_to_anatomy)
from lasegm.checkpoint import model_folders, read_checkpoint_config
from lasegm.cli import main
from lasegm.data import find_cases, load_case, load_volume
from lasegm.models import SERVED, build_model, model_kwargs, save_checkpoint
from lasegm.predict import Ensemble

# ------------------------------------------------------------------ declaring axes (synthetic)


def test_axes_codes_are_three_directions_one_per_pair():
    assert parse_axes(" asr") == "ASR"
    for bad in ("AS", "AAS", "RLS", "XYZ", "ASRR", ""):
        with pytest.raises(LasegmError, match="one of R/L, A/P and S/I"):
            parse_axes(bad)


def test_relabelling_declares_directions_and_keeps_voxels_spacing_and_origin():
    affine = affine_for()  # RAS, 1.25 x 1.25 x 1.37 mm: the release's signature
    assert has_task02_header(affine)
    declared = relabel_affine(affine, "ASR")
    assert axis_codes(declared) == "ASR" and not has_task02_header(declared)
    assert np.allclose(np.sqrt((declared[:3, :3] ** 2).sum(axis=0)), [1.25, 1.25, 1.37])
    assert np.allclose(declared[:3, 3], affine[:3, 3])
    assert np.allclose(relabel_affine(declared, "RAS"), affine)
    assert axis_codes(relabel_affine(affine, "lpi")) == "LPI"


def test_task02_header_codes_map_to_the_anatomy_they_stand_for():
    assert task02_header_to_anatomy("RAS") == TASK02_VOXEL_AXES == "ASR"
    assert task02_header_to_anatomy("LPI") == "PIL"  # each header direction's opposite maps to the opposite
    assert task02_header_to_anatomy("SRA") == "RAS"


def test_a_task02_release_folder_is_relabelled_once_announced_and_can_be_trusted_instead(tmp_path, capsys):
    root = make_dataset(tmp_path / "Task02_Heart", n_cases=2)
    (root / "dataset.json").write_text(json.dumps({"name": "LeftAtrium", "training": []}))
    cases = find_cases(root)
    find_cases(root)
    assert capsys.readouterr().err.count("is the Decathlon Task02_Heart release") == 1  # once per run
    assert [c.axes for c in cases] == ["ASR", "ASR"]
    vol, stored = load_case(cases[0]), nib.load(str(cases[0].image))
    assert axis_codes(vol.affine) == "ASR" and axis_codes(stored.affine) == "RAS"
    assert np.array_equal(vol.image, np.asanyarray(stored.dataobj)) and vol.label is not None
    assert [c.axes for c in find_cases(root, "header")] == [None, None]
    assert [c.axes for c in find_cases(root, "pil")] == ["PIL", "PIL"]
    with pytest.raises(LasegmError, match="--axes 'XYZ'"):
        find_cases(root, "XYZ")
    other = make_dataset(tmp_path / "other", n_cases=1)  # any other data set's headers are trusted
    assert find_cases(other)[0].axes is None


def test_data_commands_take_data_axes(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", n_cases=2)
    assert main(["--quiet", "analyze", "--data", str(root), "--out", str(tmp_path / "a"), "--data_axes", "PIL"]) == 0
    assert {r["axes"] for r in json.loads((tmp_path / "a" / "analysis.json").read_text())["cases"]} == {"PIL"}
    assert main(["--quiet", "analyze", "--data", str(root), "--out", str(tmp_path / "b"), "--data_axes", "Q"]) == 2
    assert "error: --axes 'Q'" in capsys.readouterr().err


def _format1(tmp_path, trained_on):
    folder = tmp_path / "format1"
    shutil.copytree(model_folders(REPO / "checkpoints" / "pspnet")[0], folder)  # one network (a view, if several)
    config = json.loads((folder / "config.json").read_text())
    config.pop("converted_from", None)
    config.update(format="lasegm.checkpoint/1", trained_on=trained_on)
    config["preprocessing"]["orientation"] = "RAS"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_format1_checkpoint_is_read_in_anatomy_or_refused(tmp_path, capsys):
    config = read_checkpoint_config(_format1(tmp_path, ["la_003", "la_005"]))
    assert config["preprocessing"]["orientation"] == "ASR" and config["format"] == "lasegm.checkpoint/2"
    assert "its orientation RAS is the anatomy's ASR" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "format1")
    with pytest.raises(LasegmError, match="format 1.*not trained on the Task02 release.*retrain it"):
        read_checkpoint_config(_format1(tmp_path, ["case_1"]))


@pytest.mark.slow
def test_models_slicing_different_planes_average_on_the_scans_grid(tmp_path):
    """A view ensemble (members slicing along different axes, with different slice windows) gives the exact mean
    of its members, and the same mask gated (no member is that sure where another is not: see test_views)."""
    kw = model_kwargs("unet", "resnet18", 1, decoder_width=16)
    members = []
    for i, (orientation, version) in enumerate((("RAS", 2), ("ASR", 3), ("RSA", 3))):
        pre = {**TEST_PREPROCESSING, "orientation": orientation, "version": version,
               "normalization": "fov_cube_clip_p0.5_p99.5_zscore" if version == 3 else "fov_clip_p0.5_p99.5_zscore",
               "resize": "fov_cube_bilinear" if version == 3 else "fov_bilinear", "fov_mm": 60.0}
        members.append(save_checkpoint(tmp_path / f"m{i}", build_model("unet", kw),
                                       {"arch": "unet", "encoder": "resnet18", "model_kwargs": kw, "preprocessing": pre}))
    image, _ = synthetic_volume((48, 40, 56))
    write_nifti(tmp_path / "scan.nii.gz", image)
    vol = load_volume(tmp_path / "scan.nii.gz")
    ensemble = Ensemble(members, device="cpu", backend="torch")
    mean = ensemble.probabilities(vol)
    assert mean.shape == vol.image.shape
    single = [Ensemble([m], device="cpu", backend="torch").probabilities(vol) for m in members]
    assert np.allclose(Ensemble(members, device="cpu", backend="torch", exhaustive=True).probabilities(vol),
                       np.mean(single, axis=0), atol=1e-5)
    assert np.array_equal(ensemble.post.binarize(mean), ensemble.post.binarize(np.mean(single, axis=0)))


# ------------------------------------------------------------------ the real release


def test_every_development_file_reads_asr_with_voxels_and_labels_unchanged(real_data):
    for case in find_cases(real_data):
        vol = load_case(case)
        stored, label = nib.load(str(case.image)), nib.load(str(case.label))
        assert axis_codes(stored.affine) == "RAS" and axis_codes(vol.affine) == "ASR", case.case_id
        assert np.array_equal(vol.image, np.asanyarray(stored.dataobj))
        assert np.array_equal(vol.label, np.asanyarray(label.dataobj))


# la_003's 3D Dice with each served model (each: axial + coronal views) as
# `lasegm predict --axes ASR` gave when they were published. The models trained on la_003: a fit, not an accuracy.
RECORDED_LA_003 = {"unet": 0.9590, "fpn": 0.9627, "pspnet": 0.9566}


@pytest.mark.parametrize("arch", SERVED)
def test_correct_header_and_declared_axes_give_the_same_mask_and_the_recorded_dice(arch, real_data, tmp_path,
                                                                                   capsys):
    image, label = (real_data / part / "la_003.nii.gz" for part in ("imagesTr", "labelsTr"))
    for path in (image, label):  # what a scanner or a converter would write: the same voxels, a true header
        stored = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.asanyarray(stored.dataobj), relabel_affine(stored.affine, "ASR"), stored.header),
                 str(tmp_path / f"{path.parent.name}.nii.gz"))
    runs = {"correct header": [str(tmp_path / "imagesTr.nii.gz"), str(tmp_path / "labelsTr.nii.gz")],
            "declared": [str(image), str(label), "--axes", "ASR"],
            "release header": [str(image), str(label)]}
    masks, said = {}, {}
    for name, (scan, truth, *axes) in runs.items():
        out = tmp_path / f"{name}.nii.gz"
        assert main(["--quiet", "predict", "--checkpoint", str(REPO / "checkpoints" / arch), "--input", scan,
                     "--label", truth, "--output", str(out), *axes]) == 0
        said[name] = capsys.readouterr()
        masks[name] = np.asanyarray(nib.load(str(out)).dataobj)
    assert np.array_equal(masks["correct header"], masks["declared"])
    for name in ("correct header", "declared"):
        assert f"3D Dice {RECORDED_LA_003[arch]:.4f}" in said[name].out
        assert "warning" not in said[name].err
    assert "pass --axes ASR" in said["release header"].err
    # the mask is written over the file as stored: it opens over the input in any viewer
    assert np.allclose(nib.load(str(tmp_path / "declared.nii.gz")).affine, nib.load(str(image)).affine)
