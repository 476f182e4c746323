"""Training augmentation: independent draws per transform, per DataLoader worker, reproducible per seed."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import SYNTHETIC_FLAGS
from lasegm.augment import NnUNetAugmentation, augmentation, rotation_matrix, sampling_grid, seed_loader_worker
from lasegm.cli import main
from lasegm.config import Recipe
from lasegm.train import optimisation

# an asymmetric image: a bright block in the top-right corner (rows 5-14, columns 40-59 of 64 x 64)
IMAGE = np.zeros((64, 64, 3), np.float32)
IMAGE[5:15, 40:60] = 1.0
MASK = (IMAGE[..., 0] > 0).astype(np.uint8)


def quadrant(array: np.ndarray) -> tuple[str, str]:
    rows, cols = np.nonzero(array > 0.5)
    return ("top" if rows.mean() < 32 else "bottom"), ("right" if cols.mean() > 32 else "left")


def test_mirroring_flips_each_axis_on_its_own():
    # the block stays in its quadrant under the affine part (<= 8 % shift, 15 degrees), so where it lands says
    # which flips were drawn: all four combinations must occur, image and mask alike
    aug = augmentation(seed=0, mirror=True)
    seen = Counter()
    for _ in range(400):
        out = aug(image=IMAGE, mask=MASK)
        where = quadrant(out["image"][..., 1])
        assert where == quadrant(out["mask"])
        seen[where] += 1
    assert set(seen) == {("top", "right"), ("top", "left"), ("bottom", "right"), ("bottom", "left")}, seen
    assert min(seen.values()) > 60, seen  # ~100 each; one seed shared per transform gave only two of them


def test_transforms_draw_from_one_stream_not_equal_copies():
    aug = augmentation(seed=0, mirror=True)
    draws = [t.py_random.random() for t in aug.transforms]
    assert len(set(draws)) == len(draws)


def test_seeded_augmentation_is_reproducible():
    a, b = augmentation(seed=3, mirror=True), augmentation(seed=3, mirror=True)
    for _ in range(5):
        np.testing.assert_array_equal(a(image=IMAGE)["image"], b(image=IMAGE)["image"])


class SameImage(torch.utils.data.Dataset):
    def __init__(self):
        self.transform = augmentation(seed=0, mirror=True)

    def __len__(self):
        return 8

    def __getitem__(self, k):
        return torch.from_numpy(np.ascontiguousarray(self.transform(image=IMAGE)["image"]))


def loader_batches(seed: int, **kwargs) -> list[torch.Tensor]:
    loader = torch.utils.data.DataLoader(SameImage(), batch_size=1, num_workers=2,
                                         generator=torch.Generator().manual_seed(seed), **kwargs)
    return list(loader)


def test_loader_workers_draw_their_own_augmentations():
    # every item is the same image: only the augmentation makes samples differ. Worker 0 serves items 0, 2, ...
    # and worker 1 items 1, 3, ...; forked with one shared state they would return identical pairs.
    batches = loader_batches(0, worker_init_fn=seed_loader_worker)
    assert not all(torch.equal(batches[i], batches[i + 1]) for i in range(0, 8, 2))
    np.testing.assert_array_equal(torch.stack(batches), torch.stack(loader_batches(0, worker_init_fn=seed_loader_worker)))
    without = loader_batches(0)  # what the loader did before: the workers repeat each other
    assert all(torch.equal(without[i], without[i + 1]) for i in range(0, 8, 2))


# --- the 3D model's augmentation (nnU-Net's), on a batch of slabs -------------------------------------------------

NONE = dict(p_rotate=0, p_scale=0, p_elastic=0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0, p_lowres=0,
            p_gamma_inverted=0, p_gamma=0)


def blob_batch(shape=(16, 32, 8), offset=(0, 0, 0), half=1):
    """(1, 1, D, H, W) zeros with a small cube at `offset` voxels from the centre."""
    x = torch.zeros((1, 1, *shape))
    c = [s // 2 + o for s, o in zip(shape, offset)]
    x[0, 0, c[0] - half : c[0] + half, c[1] - half : c[1] + half, c[2] - half : c[2] + half] = 1
    return x


def centroid_offset(x: torch.Tensor) -> np.ndarray:
    idx = np.argwhere(x[0, 0].numpy() > 0.5)
    return idx.mean(0) - (np.array(x.shape[2:]) / 2 - 0.5)


def warp(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    grid = sampling_grid(matrix[None], tuple(x.shape[2:]))
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=False)


def test_volume_augmentation_with_nothing_drawn_returns_the_batch_exactly():
    x, y = torch.randn(2, 1, 16, 32, 32), (torch.rand(2, 1, 16, 32, 32) > 0.7).float()
    ax, ay = NnUNetAugmentation(seed=0, **NONE)(x, y)
    assert torch.equal(ax, x) and torch.equal(ay, y)


def test_a_rotation_turns_voxels_not_normalised_coordinates_in_a_slab_deeper_or_shallower_than_wide():
    """90 degrees in the depth-height plane of a 16 x 32 x 8 slab: a blob 6 voxels off centre along height lands
    6 voxels off centre along depth (affine_grid's normalised coordinates would put it 3 voxels off: a shear)."""
    x = blob_batch(offset=(0, 6, 0))
    turned = warp(x, rotation_matrix(torch.tensor([0.0, 0.0, np.pi / 2])))  # about the width axis
    off = centroid_offset(turned)
    assert abs(abs(off[0]) - 6) < 0.5 and abs(off[1]) < 0.5 and abs(off[2]) < 0.5


def test_a_zoom_scales_every_axis_alike():
    x = blob_batch(shape=(16, 32, 24), half=2)  # a 4-voxel cube
    zoomed = warp(x, torch.eye(3, dtype=torch.float64) / 2)  # output voxel -> input: half the offset = 2x zoom
    extent = [int(np.ptp(np.flatnonzero((zoomed[0, 0] > 0.5).numpy().any(axis=tuple(a for a in range(3) if a != k))))
                  + 1) for k in range(3)]
    assert extent == [8, 8, 8]


def test_image_and_mask_move_together_and_the_mask_stays_binary():
    y = (torch.rand(4, 1, 16, 32, 32) > 0.5).float()
    y = torch.nn.functional.avg_pool3d(y, 5, 1, 2).gt(0.5).float()  # blobs rather than noise
    aug = NnUNetAugmentation(seed=1, **{**NONE, "p_rotate": 1, "p_scale": 1, "p_elastic": 1})
    ax, ay = aug(y.clone(), y.clone())
    assert not torch.equal(ay, y)  # it moved
    assert set(ay.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(ax >= 0.5, ay > 0)  # the same grid resampled both


def test_gamma_on_z_scored_slabs_keeps_them_finite_with_their_mean_and_std():
    x = torch.randn(3, 1, 8, 16, 16) * 2 - 1  # negative values, where a bare power gives NaN
    aug = NnUNetAugmentation(seed=0, **{**NONE, "p_gamma": 1})
    ax, _ = aug(x, torch.zeros_like(x))
    assert torch.isfinite(ax).all() and not torch.allclose(ax, x)
    for a, b in zip(ax, x):
        assert float(a.mean()) == pytest.approx(float(b.mean()), abs=1e-4)
        assert float(a.std()) == pytest.approx(float(b.std()), rel=1e-4)


def test_every_intensity_transform_keeps_a_batch_finite_and_its_shape():
    """All of nnU-Net's intensity transforms at once, on 3D slabs and on 2.5D slices (3 channels)."""
    always = {**NONE, "p_noise": 1, "p_blur": 1, "p_brightness": 1, "p_contrast": 1, "p_lowres": 1,
              "p_gamma_inverted": 1, "p_gamma": 1}
    for planar, shape in ((False, (2, 1, 8, 24, 20)), (True, (2, 3, 24, 20))):
        x = torch.randn(shape) * 2 - 1
        ax, ay = NnUNetAugmentation(seed=0, planar=planar, **always)(x, torch.zeros(shape[0], 1, *shape[2:]))
        assert ax.shape == x.shape and ay.shape == (shape[0], 1, *shape[2:])
        assert torch.isfinite(ax).all() and not torch.allclose(ax, x)


def test_inverted_gamma_keeps_mean_and_std_and_differs_from_plain_gamma():
    x = torch.randn(2, 1, 8, 16, 16)
    inverted, _ = NnUNetAugmentation(seed=0, **{**NONE, "p_gamma_inverted": 1})(x, torch.zeros_like(x))
    plain, _ = NnUNetAugmentation(seed=0, **{**NONE, "p_gamma": 1})(x, torch.zeros_like(x))
    assert not torch.allclose(inverted, plain)
    for a, b in zip(inverted, x):
        assert float(a.mean()) == pytest.approx(float(b.mean()), abs=1e-4)
        assert float(a.std()) == pytest.approx(float(b.std()), rel=1e-4)


def test_blur_and_low_resolution_stay_within_a_slice_in_2d():
    """A 2.5D sample's channels are neighbouring slices: blurring or resampling one must not leak into another."""
    x = torch.zeros(1, 3, 32, 32)
    x[0, 1, 12:20, 12:20] = 5.0  # only the centre slice holds anything
    for p in ("p_blur", "p_lowres"):
        ax, _ = NnUNetAugmentation(seed=0, planar=True, **{**NONE, p: 1})(x, torch.zeros(1, 1, 32, 32))
        assert torch.equal(ax[0, [0, 2]], x[0, [0, 2]]) and not torch.equal(ax[0, 1], x[0, 1])


def test_the_2d_policy_turns_slices_in_their_plane_by_up_to_180_degrees():
    """nnU-Net's 2D rotation (+-180 deg, no scaling here): a blob 8 pixels off centre stays 8 pixels off centre, at
    angles across the whole circle, and its mask goes with it."""
    n, size = 64, 32
    x = torch.zeros(n, 1, size, size)
    x[:, 0, 15:17, 23:25] = 1.0  # 8 columns right of the centre (15.5)
    aug = NnUNetAugmentation(seed=0, planar=True, **{**NONE, "p_rotate": 1})
    ax, ay = aug(x.clone(), x.clone())
    assert ax.shape == x.shape and torch.equal(ax >= 0.5, ay > 0)
    angles = []
    for blob in ay[:, 0]:
        rows, cols = np.nonzero(blob.numpy())
        dy, dx = rows.mean() - 15.5, cols.mean() - 15.5
        assert np.hypot(dy, dx) == pytest.approx(8, abs=1.0)
        angles.append(np.degrees(np.arctan2(dy, dx)))
    assert max(np.abs(angles)) > 150 and np.ptp(angles) > 300


def test_volume_augmentation_is_reproducible_per_seed():
    x, y = torch.randn(4, 1, 16, 16, 16), (torch.rand(4, 1, 16, 16, 16) > 0.5).float()
    runs = [NnUNetAugmentation(seed=s, p_rotate=0.5, p_scale=0.5, p_elastic=0.5, p_noise=0.5)(x, y) for s in (3, 3, 4)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_nnunet_optimisation_sgd_nesterov_poly_and_clipping():
    model = torch.nn.Linear(2, 1)
    cfg = Recipe(optimizer="sgd", lr=0.01, weight_decay=3e-5, scheduler="poly")
    opt, sched, clip = optimisation(cfg, model, 100, torch.device("cpu"))
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.99 and clip == 12.0
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[50] == pytest.approx(0.01 * 0.5 ** 0.9)
    assert opt.param_groups[0]["lr"] == 0.0
    adamw, _, no_clip = optimisation(Recipe(), model, 100, torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW) and no_clip == 0.0


def test_2d_augmentation_is_refused_for_the_3d_model_before_any_data_is_read(tmp_path, capsys):
    assert main(["--quiet", "train", "--arch=unet3d", "--context=0", "--augment_2d=nnunet",
                 f"--data={tmp_path / 'none'}", "--wandb_mode=disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--augment_2d" in err and "unet3d" in err


@pytest.mark.slow
def test_a_2d_model_trains_with_nnunets_2d_augmentation(dataset, tmp_path, monkeypatch):
    """--augment_2d=nnunet through the CLI: the batch is augmented on the device, the recipe records it, and the
    model still learns the synthetic atrium."""
    monkeypatch.chdir(tmp_path)
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split), "--val_fraction", "0.2",
                 "--test_fraction", "0.2"]) == 0
    assert main(["--quiet", "train", "--arch=unet", "--decoder_width=32", "--image_size=64", "--epochs=4",
                 "--samples_per_epoch=96", "--batch_size=8", "--lr=0.003", "--loss=dice", "--augment_2d=nnunet",
                 *SYNTHETIC_FLAGS, f"--data={dataset}", f"--split_file={split}", "--run_name=nn2d", "--out_dir=runs",
                 "--wandb_mode=disabled"]) == 0
    run = tmp_path / "runs" / "nn2d"
    assert json.loads((run / "checkpoint" / "config.json").read_text())["train_config"]["augment_2d"] == "nnunet"
    history = json.loads((run / "history.json").read_text())
    assert max(h["val_dice_3d"] for h in history) > 0.5


def test_3d_augmentation_is_refused_for_a_2d_model_before_any_data_is_read(tmp_path, capsys):
    assert main(["--quiet", "train", "--arch=unet", "--augment_3d", f"--data={tmp_path / 'none'}",
                 "--wandb_mode=disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--augment_3d" in err and "unet3d" in err
