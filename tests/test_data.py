import gzip

import numpy as np
import pytest
from conftest import affine_for, make_dataset, synthetic_volume, write_nifti

from lasegm import LasegmError
from lasegm.data import find_cases, load_all_cached, load_cached, load_volume
from lasegm.preprocess import Preprocessing, normalize_intensities
from lasegm.metrics import dice


def test_find_cases_pairs_images_and_labels(dataset):
    cases = find_cases(dataset)
    assert [c.case_id for c in cases] == [f"la_{i:03d}" for i in range(1, 8)]
    assert all(c.label.name == c.image.name for c in cases)


def test_macos_resource_forks_are_ignored(dataset):
    (dataset / "imagesTr" / "._la_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    assert len(find_cases(dataset)) == 7


@pytest.mark.parametrize("problem, message", [
    ("missing_folder", "data folder not found"),
    ("no_labels_dir", "labelsTr: missing"),
    ("image_without_label", "image has no label"),
    ("label_without_image", "label has no image"),
    ("stray_file", "not a NIfTI file"),
])
def test_find_cases_errors_name_the_file(tmp_path, problem, message):
    root = make_dataset(tmp_path / "d", n_cases=3)
    if problem == "missing_folder":
        root = tmp_path / "nope"
    elif problem == "no_labels_dir":
        for p in (root / "labelsTr").iterdir():
            p.unlink()
        (root / "labelsTr").rmdir()
    elif problem == "image_without_label":
        (root / "labelsTr" / "la_002.nii.gz").unlink()
    elif problem == "label_without_image":
        (root / "imagesTr" / "la_002.nii.gz").unlink()
    elif problem == "stray_file":
        (root / "imagesTr" / "notes.txt").write_text("hello")
    with pytest.raises(LasegmError, match=message):
        find_cases(root)


def _pair(tmp_path, image, label, label_affine=None):
    img = write_nifti(tmp_path / "img.nii.gz", image)
    lab = write_nifti(tmp_path / "lab.nii.gz", label, label_affine)
    return img, lab


def test_load_volume_keeps_geometry(tmp_path):
    image, label = synthetic_volume((40, 30, 12))
    img, lab = _pair(tmp_path, image, label)
    vol = load_volume(img, lab)
    assert vol.image.shape == (40, 30, 12) and vol.label.dtype == np.uint8
    np.testing.assert_allclose(vol.affine, affine_for())
    assert vol.spacing == pytest.approx((1.25, 1.25, 1.37))


@pytest.mark.parametrize("case, message", [
    ("shape", "label shape"),
    ("affine", "label affine differs"),
    ("non_binary", "must be binary"),
    ("2d", "expected a 3D volume, got 2D"),
    ("4d", "expected a 3D volume, got 4D"),
    ("corrupt", "corrupt or unreadable NIfTI"),
    ("truncated", "corrupt or unreadable NIfTI"),
    ("nan", "NaN"),
])
def test_load_volume_rejects_bad_input(tmp_path, case, message):
    image, label = synthetic_volume((32, 32, 8))
    label_affine = None
    if case == "shape":
        label = label[:, :, :6]
    elif case == "affine":
        label_affine = affine_for(shift=(0, 0, 40))
    elif case == "non_binary":
        label = label * 2
    elif case == "2d":
        image = image[..., 0]
    elif case == "4d":
        image = np.stack([image, image], axis=-1)
    elif case == "nan":
        image = image.astype(np.float32)
        image[0, 0, 0] = np.nan
    img, lab = _pair(tmp_path, image, label, label_affine)
    if case == "corrupt":
        img.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    elif case == "truncated":
        img.write_bytes(img.read_bytes()[:2000])
    with pytest.raises(LasegmError, match=message):
        load_volume(img, lab)


def test_single_channel_4d_is_accepted(tmp_path):
    image, label = synthetic_volume((32, 32, 8))
    img = write_nifti(tmp_path / "img.nii.gz", image[..., None])
    assert load_volume(img).image.shape == (32, 32, 8)


def test_normalize_is_scale_free():
    image, _ = synthetic_volume((32, 32, 8))
    a = normalize_intensities(image.astype(np.float32))
    b = normalize_intensities(image.astype(np.float32) * 3 + 500)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert abs(a.mean()) < 1e-3 and abs(a.std() - 1) < 1e-3


@pytest.mark.parametrize("shape", [(320, 320, 6), (256, 256, 6), (97, 131, 5), (64, 48, 4)])
def test_resize_roundtrip_any_inplane_size(shape):
    """Labels taken to model size and back land on the scan's grid with the same geometry."""
    _, label = synthetic_volume(shape, radii=(shape[0] * 0.25, shape[1] * 0.25, shape[2] * 0.6))
    pre = Preprocessing(image_size=96, fov_mm=max(shape[:2]) * 1.25)
    # slices as thick as a model pixel: one model slice each (the slice axis is resampled too; test_preprocess)
    geo = pre.geometry(affine_for(spacing=(1.25, 1.25, pre.fov_mm / pre.image_size)), shape)
    small = pre.prepare_label(label, geo)
    assert small.shape == (shape[2], 96, 96)
    back = pre.restore(small, geo) >= 0.5
    assert back.shape == shape
    assert dice(back, label) > 0.9


def test_field_of_view_crop_is_physical_and_invertible():
    """A 200 mm window is 160 px on 1.25 mm slices whatever the matrix (256 crop or 320 original)."""
    pre = Preprocessing(image_size=128, fov_mm=200)
    for side in (256, 320):
        assert pre.geometry(affine_for(), (side, side, 5)).window == (160, 160)
    assert pre.geometry(affine_for((0.625, 2.0, 3.0)), (64, 64, 5)).window == (320, 100)
    shape = (320, 300, 4)
    _, label = synthetic_volume(shape, radii=(40, 30, 3))
    geo = pre.geometry(affine_for(), shape)
    small = pre.prepare_label(label, geo)
    assert small.shape == (4, 128, 128) and small.sum() > 0
    back = pre.restore(small, geo) >= 0.5
    assert back.shape == shape and dice(back, label) > 0.9
    # a window larger than the slice pads instead of cropping
    big = Preprocessing(image_size=100, fov_mm=500 * 1.25)
    _, lab = synthetic_volume((64, 64, 4), radii=(10, 10, 3))
    g = big.geometry(affine_for(), lab.shape)
    back = big.restore(big.prepare_label(lab, g), g)
    assert dice(back >= 0.5, lab) > 0.85


def test_cache_is_reused_and_rebuilt_when_damaged(dataset, tmp_path):
    case = find_cases(dataset)[0]
    pre = Preprocessing(image_size=32, fov_mm=80)
    first = load_cached(case, pre, tmp_path / "c")
    files = list((tmp_path / "c").glob("*.npz"))
    assert len(files) == 1 and first.image.shape == (13, 32, 32)  # 24 slices of 1.37 mm at 2.5-mm model pixels
    files[0].write_bytes(b"garbage")
    again = load_cached(case, pre, tmp_path / "c")
    np.testing.assert_array_equal(again.label, first.label)


def test_cases_load_in_parallel_in_order_and_a_bad_scan_still_names_itself(dataset, tmp_path):
    cases = find_cases(dataset)
    pre = Preprocessing(image_size=32, fov_mm=80)
    together = load_all_cached(cases, pre, tmp_path / "c")
    assert [c.case_id for c in together] == [c.case_id for c in cases]
    for one, case in zip(together, cases):
        np.testing.assert_array_equal(one.image, load_cached(case, pre, tmp_path / "serial").image)
    cases[3].image.write_bytes(b"not a nifti")
    with pytest.raises(LasegmError, match=cases[3].image.name):
        load_all_cached(cases, pre, tmp_path / "fresh")


def test_augmentation_is_reproducible_from_the_seed():
    """One command, one result: the augmentation's own RNG follows --seed."""
    from lasegm.train import augmentation

    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64, 3)).astype(np.float32)
    mask = (rng.random((64, 64)) > 0.5).astype(np.uint8)

    def draws(seed):
        aug = augmentation(seed)
        return [aug(image=image, mask=mask)["image"] for _ in range(5)]

    a, b, c = draws(3), draws(3), draws(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
