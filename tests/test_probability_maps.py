"""Saved probability maps: what a fold's model gave its held-out patients, small on disk, back on the scan's grid."""

import numpy as np
import pytest

from lasegm import LasegmError
from lasegm.probability_maps import (FOLDER, load_probability_map, map_flip_tta, on_grid, save_probability_maps,
                                     saved_maps)

AFFINE = np.diag([1.25, 1.25, 1.37, 1.0])


def blob_probabilities(shape=(40, 36, 20), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.zeros(shape, np.float32)
    p[10:25, 8:30, 5:15] = rng.random((15, 22, 10), dtype=np.float32)
    return p


def test_a_map_comes_back_on_its_grid_within_the_rounding_and_small(tmp_path):
    p = blob_probabilities()
    save_probability_maps(tmp_path / FOLDER, {"la_001": (p, AFFINE), "la_empty": (np.zeros((8, 8, 4)), AFFINE)},
                          False)
    back, affine, tta = load_probability_map(tmp_path / FOLDER / "la_001.npz")
    assert back.shape == p.shape and back.dtype == np.float32 and tta is False and np.array_equal(affine, AFFINE)
    assert np.abs(back - p).max() <= 0.5 / 255 + 1e-7
    assert np.array_equal(back == 0, np.rint(p * 255) == 0)  # nothing outside the stored box
    empty, _, _ = load_probability_map(tmp_path / FOLDER / "la_empty.npz")
    assert empty.shape == (8, 8, 4) and not empty.any()
    # cropped to the nonzero box and compressed: far below the float array's 115 KB
    assert (tmp_path / FOLDER / "la_001.npz").stat().st_size < 10_000
    save_probability_maps(tmp_path / "tta", {"la_001": (p, AFFINE)}, True)
    assert map_flip_tta(tmp_path / "tta" / "la_001.npz") is True
    assert map_flip_tta(tmp_path / FOLDER / "la_001.npz") is False


def test_the_mean_of_two_maps_thresholds_as_the_floats_do_except_at_the_rounding(tmp_path):
    a, b = blob_probabilities(seed=1), blob_probabilities(seed=2)
    save_probability_maps(tmp_path / "a", {"x": (a, AFFINE)}, True)
    save_probability_maps(tmp_path / "b", {"x": (b, AFFINE)}, True)
    mean = (load_probability_map(tmp_path / "a" / "x.npz")[0] + load_probability_map(tmp_path / "b" / "x.npz")[0]) / 2
    exact = (a + b) / 2
    differ = (mean >= 0.5) != (exact >= 0.5)
    assert np.all(np.abs(exact[differ] - 0.5) <= 1 / 255)


def test_a_folder_is_replaced_whole_and_only_complete_sets_are_offered(tmp_path):
    run = tmp_path / "fold-0"
    save_probability_maps(run / FOLDER, {"la_001": (blob_probabilities(), AFFINE),
                                         "la_002": (blob_probabilities(), AFFINE)}, False)
    save_probability_maps(run / FOLDER, {"la_001": (blob_probabilities(), AFFINE)}, False)  # a later kept epoch
    assert sorted(p.name for p in (run / FOLDER).iterdir()) == ["la_001.npz"]
    assert saved_maps(run, ["la_001"]) == [run / FOLDER / "la_001.npz"]
    assert saved_maps(run, ["la_001", "la_002"]) is None and saved_maps(tmp_path / "none", ["la_001"]) is None


def test_a_map_made_on_a_crop_of_the_scan_goes_back_to_its_place_and_another_grid_is_refused(tmp_path):
    """A GPU machine trains on scans cropped in-plane (docs/gpu.md): its maps are placed back by their affines."""
    full = blob_probabilities()
    crop_affine = AFFINE @ np.array([[1, 0, 0, 4], [0, 1, 0, 3], [0, 0, 1, 0], [0, 0, 0, 1]])
    save_probability_maps(tmp_path, {"x": (full[4:34, 3:33], crop_affine), "y": (full, AFFINE)}, False)
    placed = on_grid(load_probability_map(tmp_path / "x.npz"), full.shape, AFFINE)
    same = on_grid(load_probability_map(tmp_path / "y.npz"), full.shape, AFFINE)
    assert np.array_equal(placed, same)  # the blob lies inside the crop
    with pytest.raises(LasegmError, match="another grid"):
        on_grid(load_probability_map(tmp_path / "y.npz"), full.shape, np.diag([1.0, 1.25, 1.37, 1.0]))
    with pytest.raises(LasegmError, match="does not fit"):
        on_grid(load_probability_map(tmp_path / "y.npz"), (30, 30, 20), AFFINE)


def test_a_file_that_is_not_a_map_is_refused_in_one_line(tmp_path):
    np.savez(tmp_path / "other.npz", probability=np.zeros(3))
    with pytest.raises(LasegmError, match="not a lasegm probability map"):
        load_probability_map(tmp_path / "other.npz")
    with pytest.raises(LasegmError, match="not a lasegm probability map"):
        map_flip_tta(tmp_path / "other.npz")
    with pytest.raises(LasegmError, match="not found"):
        load_probability_map(tmp_path / "missing.npz")
