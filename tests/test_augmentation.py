"""Training augmentation: independent draws per transform, per DataLoader worker, reproducible per seed."""

from collections import Counter

import numpy as np
import torch

from lasegm.train import augmentation, seed_loader_worker

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
