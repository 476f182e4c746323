import math

import numpy as np
import pytest
from scipy import ndimage

from lasegm.metrics import case_metrics, dice, hd95, iou, patient_row, slice_dice, summarize, volume_ml
from lasegm.utils import bounding_box


def test_dice_and_iou_hand_computed():
    a = np.zeros((4, 4, 1), bool)
    b = np.zeros((4, 4, 1), bool)
    a[0, :2] = True  # 2 voxels
    b[0, 1:4] = True  # 3 voxels, 1 shared
    assert dice(a, b) == pytest.approx(2 * 1 / 5)
    assert iou(a, b) == pytest.approx(1 / 4)


def test_empty_masks():
    empty, full = np.zeros((3, 3, 3)), np.ones((3, 3, 3))
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert hd95(empty, empty) == 0.0
    assert math.isinf(hd95(empty, full))


def test_hd95_uses_spacing():
    a = np.zeros((20, 5, 5), bool)
    b = np.zeros((20, 5, 5), bool)
    a[2, 2, 2] = True
    b[7, 2, 2] = True  # 5 voxels apart along x
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(10.0)
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(5.0)


def test_hd95_of_shifted_cube():
    a = np.zeros((30, 30, 30), bool)
    a[10:20, 10:20, 10:20] = True
    b = np.roll(a, 3, axis=0)
    d = hd95(a, b, (1.0, 1.0, 1.0))
    assert 2.0 <= d <= 3.0 + 1e-6  # surfaces are at most 3 mm apart
    assert hd95(a, a) == 0.0


def test_volume_and_case_metrics():
    m = np.zeros((10, 10, 10), np.uint8)
    m[:5, :5, :4] = 1  # 100 voxels
    assert volume_ml(m, (2.0, 2.0, 2.5)) == pytest.approx(1.0)
    r = case_metrics(m, m, (1, 1, 1))
    assert r["dice"] == 1.0 and r["hd95_mm"] == 0.0 and r["volume_error_ml"] == 0.0


def _uncropped_hd95(pred, gt, spacing):
    """HD95 straight from the definition on the whole array (what the cropped version must equal)."""
    def surface(m):
        return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1))

    sp, sg = surface(pred), surface(gt)
    d = np.concatenate([ndimage.distance_transform_edt(~sg, sampling=spacing)[sp],
                        ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]])
    return float(np.percentile(d, 95))


@pytest.mark.parametrize("where", ["inside", "at the border"])
def test_patient_row_on_the_crop_equals_the_whole_scan(where):
    """Scoring runs on the box around both masks: every number must be what the whole scan gives, also when
    a mask touches the scan's edge (where the box's edge is the scan's)."""
    rng = np.random.default_rng(0)
    gt = np.zeros((60, 50, 40), np.uint8)
    lo = (0, 0, 0) if where == "at the border" else (20, 15, 10)
    gt[lo[0]:lo[0] + 15, lo[1]:lo[1] + 12, lo[2]:lo[2] + 9] = 1
    pred = ndimage.binary_dilation(gt, iterations=2) & (rng.random(gt.shape) > 0.2)
    pred[45:48, 40:43, 30:33] = True  # a far false positive widens the box
    spacing = (0.7, 0.9, 1.3)
    row = patient_row("p", pred, gt, spacing, 0.0)
    g, p = gt.astype(bool), pred.astype(bool)
    assert row["dice"] == pytest.approx(2 * (p & g).sum() / (p.sum() + g.sum()))
    assert row["iou"] == pytest.approx((p & g).sum() / (p | g).sum())
    assert row["hd95_mm"] == pytest.approx(_uncropped_hd95(p, g, spacing))
    assert row["volume_pred_ml"] == pytest.approx(p.sum() * np.prod(spacing) / 1000)
    per_slice = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in zip(np.moveaxis(p, 2, 0), np.moveaxis(g, 2, 0))
                 if a.any() or b.any()]
    assert row["dice_slice"] == pytest.approx(np.mean(per_slice))


def test_patient_row_of_two_empty_masks():
    empty = np.zeros((8, 8, 8), np.uint8)
    row = patient_row("p", empty, empty, (1, 1, 1), 0.0)
    assert row["dice"] == 1.0 and row["iou"] == 1.0 and row["hd95_mm"] == 0.0 and row["dice_slice"] == 1.0


def test_slice_dice_ignores_slices_empty_in_both():
    gt = np.zeros((3, 4, 4))
    gt[0, :2] = 1
    pred = gt.copy()
    pred[2, 0, 0] = 1  # false positive on an otherwise empty slice
    assert slice_dice(pred, gt) == pytest.approx(0.5)


def test_summarize_counts_infinite():
    s = summarize([{"hd95_mm": 2.0}, {"hd95_mm": math.inf}, {"hd95_mm": 4.0}])
    assert s["hd95_mm"]["mean"] == 3.0 and s["hd95_mm"]["n_infinite"] == 1 and s["hd95_mm"]["n"] == 3


def test_largest_component_keeps_the_biggest_blob():
    from lasegm.postprocess import largest_component

    m = np.zeros((20, 20, 20), np.uint8)
    m[2:8, 2:8, 2:8] = 1  # 216 voxels
    m[12:14, 12:14, 12:14] = 1  # 8 voxels, a separate false positive
    out = largest_component(m)
    assert out.sum() == 216 and out[13, 13, 13] == 0 and out.dtype == m.dtype
    assert largest_component(np.zeros_like(m)).sum() == 0


def test_surface_mesh_encloses_the_mask_volume_in_mm(tmp_path):
    """Marching cubes on an anisotropic grid: the mesh is in mm and holds the mask's volume."""
    import trimesh

    from lasegm.viz import mesh_volume_ml, save_mesh, surface_mesh

    spacing = (1.25, 1.25, 2.5)
    x, y, z = np.meshgrid(*[np.arange(n) * s for n, s in zip((64, 64, 32), spacing)], indexing="ij")
    ball = ((x - 40) ** 2 + (y - 40) ** 2 + (z - 40) ** 2 <= 25 ** 2).astype(np.uint8)  # r = 25 mm: 65.4 mL
    verts, faces, normals = surface_mesh(ball, spacing)
    assert mesh_volume_ml(verts, faces) == pytest.approx(4 / 3 * np.pi * 25 ** 3 / 1000, rel=0.03)
    assert np.ptp(verts, axis=0) == pytest.approx([50, 50, 50], abs=3)  # mm, not voxels
    outward = verts - verts.mean(axis=0)  # the ball's centre to each vertex: viewers light the outer side
    assert ((outward * normals).sum(axis=1) > 0).all()
    winding = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    assert ((verts[faces].mean(axis=1) - verts.mean(axis=0)) * winding).sum(axis=1).min() > 0
    glb = trimesh.load(save_mesh(verts, faces, normals, tmp_path / "ball.glb"), force="mesh")
    assert abs(glb.volume) / 1000 == pytest.approx(mesh_volume_ml(verts, faces), rel=1e-3)
    assert surface_mesh(np.zeros((4, 4, 4), np.uint8), spacing)[0].shape == (0, 3)


def test_training_batch_dice_matches_the_metric_and_stays_on_the_device():
    import torch

    from lasegm.train import batch_dice

    rng = np.random.default_rng(0)
    logits, target = rng.normal(size=(4, 1, 8, 8)), rng.random((4, 1, 8, 8)) > 0.5
    got = batch_dice(torch.tensor(logits), torch.tensor(target, dtype=torch.float32))
    assert isinstance(got, torch.Tensor) and got.ndim == 0  # read back once per epoch, not per step
    assert float(got) == pytest.approx(dice(logits > 0, target))
    empty = torch.zeros(2, 1, 4, 4)
    assert float(batch_dice(empty - 1, empty)) == 1.0 and float(batch_dice(empty + 1, empty)) == 0.0


def test_bounding_box():
    m = np.zeros((9, 8, 7), np.uint8)
    assert bounding_box(m) is None
    m[2, 3:5, 6] = 1
    m[4, 3, 1] = 1
    assert bounding_box(m) == (slice(2, 5), slice(3, 5), slice(1, 7))
