"""Stage 4: segment whole volumes with a checkpoint and write masks in the scan's own space."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from lasegm.checkpoint import (CONFIG_FILE, check_arch, checkpoint_recipe, read_checkpoint_config, read_views,
                               slab_depth)
from lasegm.data import Volume, load_volume
from lasegm.ood import input_flags
from lasegm.postprocess import MAX_UNSURE_PER_MASK_VOXEL, Postprocessing, quality_flags, unsure_limit
from lasegm.preprocess import stack_context
from lasegm.runtime import open_runner
from lasegm.utils import atomic_path


# Mirroring (flip TTA) is skipped on slices where the plain pass gives every pixel less than this: the
# average of the two could reach the 0.5 threshold there only where the mirrored pass is >= 95 % sure
# while the plain one is < 5 % sure. Most slices of a scan hold no atrium, so this keeps TTA cheap.
TTA_MIN_PROBABILITY = 0.05
_TTA_MIN_LOGIT = float(np.log(TTA_MIN_PROBABILITY / (1 - TTA_MIN_PROBABILITY)))
# The same rule for a view that slices differently from the members before it (a multi-view checkpoint): nothing can
# be skipped exactly there (in a mean of two, 0 + 1 reaches 0.5), so its slices are skipped where the members left
# would all have to be >= 95 % sure (research_log.md, 2026-12-06: two views cost about one and a half).
VIEW_MIN_PROBABILITY = TTA_MIN_PROBABILITY
# A 2D network runs every other slice first, and a slice between two of those only where one of them is >= this
# somewhere: the atrium is a solid spanning many slices, so a slice whose neighbours on both sides (one model slice
# away) hold nothing near it is taken to hold nothing either. It counts as 0, as a slice an ensemble skips does, and
# saves a quarter of the slices or more (research_log.md, 2026-12-07: the same masks on 62 of 64 model-patient pairs,
# the other two 7 and 2 voxels apart). exhaustive=True turns it off.
SPARSE_MIN_PROBABILITY = TTA_MIN_PROBABILITY
_SPARSE_MIN_LOGIT = float(np.log(SPARSE_MIN_PROBABILITY / (1 - SPARSE_MIN_PROBABILITY)))


def predict_slices(runner: Callable[[np.ndarray], np.ndarray], slices: np.ndarray, context: int,
                   batch_size: int | None = None, tta: bool = False,
                   progress: Callable[[int, int], None] | None = None, only: np.ndarray | None = None,
                   slab: int = 0, sparse: bool = False) -> np.ndarray:
    """Foreground probability for every slice of a (Z, S, S) normalised stack -> (Z, S, S) float32.

    `runner` maps a (N, C, S, S) batch to (N, S, S) logits (lasegm.runtime); batch_size defaults to the
    runner's preferred one (16 without one). `only`: run just these slice
    indices (the others get probability 0). `slab` > 0: a 3D model (lasegm.unet3d) that sees `slab`
    consecutive slices at once; it runs on overlapping slabs and the logits are averaged. `sparse` (2D only):
    skip a slice whose neighbours on both sides ran and are < SPARSE_MIN_PROBABILITY everywhere (probability 0)."""
    slices = np.asarray(slices, dtype=np.float32)
    n = len(slices)
    todo = np.arange(n) if only is None else np.asarray(only, dtype=int)
    if slab:
        return _predict_slabs(runner, slices, context, slab, tta, progress, todo)
    batch_size = batch_size or getattr(runner, "batch_size", 16)

    def inputs(zs):  # a batch: each slice with its neighbours as channels
        return np.stack([stack_context(slices, z, context) for z in zs])

    logits = np.full(slices.shape, -np.inf, dtype=np.float32)
    done = 0
    phases = [todo[todo % 2 == 0], todo[todo % 2 == 1]] if sparse else [todo]
    for phase, batch in enumerate(phases):
        if phase == 1:  # the odd slices: not those between two even ones that ran and hold nothing near the atrium
            ran = np.zeros(n + 1, bool)  # index n: past the end, never ran
            ran[phases[0]] = True
            empty = ran & np.append(logits.reshape(n, -1).max(axis=1) < _SPARSE_MIN_LOGIT, False)
            batch = batch[~(empty[batch - 1] & empty[batch + 1])]
        for start, zs in _batches(batch, batch_size):
            logits[zs] = runner(inputs(zs))
            if progress:
                progress(done + start + len(zs), len(todo))
        done += len(batch)
    if progress and done < len(todo):
        progress(len(todo), len(todo))
    if tta:  # average with the left-right mirrored prediction
        ruled_in = todo[logits[todo].reshape(len(todo), -1).max(axis=1) >= _TTA_MIN_LOGIT]
        for start, zs in _batches(ruled_in, batch_size):
            logits[zs] = 0.5 * (logits[zs] + runner(inputs(zs)[..., ::-1])[..., ::-1])
    return sigmoid(logits)


def slab_starts(n: int, slab: int) -> list[int]:
    """First slices of the slabs that tile n slices, overlapping by half (the last one ends at the last slice)."""
    if n <= slab:
        return [0]
    return list(range(0, n - slab, slab // 2)) + [n - slab]


def _predict_slabs(runner, slices, context, slab, tta, progress, todo) -> np.ndarray:
    """predict_slices for a 3D model: overlapping slabs (a scan thinner than one slab is padded by repeating
    its end slices, as 2.5D context is at the edges), logits averaged where slabs overlap."""
    n = len(slices)
    stack = np.pad(slices, [(0, max(slab - n, 0)), (0, 0), (0, 0)], mode="edge")
    wanted = np.zeros(len(stack), bool)
    wanted[todo] = True
    starts = [s for s in slab_starts(len(stack), slab) if wanted[s : s + slab].any()]
    total = np.zeros(stack.shape, np.float32)
    count = np.zeros(len(stack), np.float32)
    for i, start in enumerate(starts):
        x = np.stack([stack_context(stack, z, context) for z in range(start, start + slab)])
        logits = runner(x)
        if tta and logits.max() >= _TTA_MIN_LOGIT:
            logits = 0.5 * (logits + runner(x[..., ::-1])[..., ::-1])
        total[start : start + slab] += logits
        count[start : start + slab] += 1
        if progress:
            progress(i + 1, len(starts))
    logits = np.full(slices.shape, -np.inf, np.float32)
    logits[todo] = total[todo] / count[todo, None, None]
    return sigmoid(logits)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 probabilities; -inf (a slice not run) -> 0. numpy's, so predict need not import scipy.special; in
    place on one new array (a 224-slice volume: 11 M voxels, 40 % less time than with temporaries, same values)."""
    out = np.negative(logits, dtype=np.float32)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def _batches(indices: np.ndarray, batch_size: int):
    return ((start, indices[start : start + batch_size]) for start in range(0, len(indices), batch_size))


class _Thresholded:
    """probabilities() -> mask with the post-processing record."""

    post: Postprocessing

    def segment(self, vol: Volume, progress=None) -> np.ndarray:
        """uint8 mask on the scan's own voxel grid."""
        return self.post.binarize(self.probabilities(vol, progress))

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def trained_on(self) -> set[str]:
        """The patients the model (every member of an ensemble) trained on: no score there is accuracy."""
        members = getattr(self, "members", None)
        if members is None:
            return set(self.config.get("trained_on", []))
        return set().union(*(m.trained_on for m in members))


    @property
    def unsure_limit(self) -> float:
        """The unsure-voxel limit of the quality check: the checkpoint's record; an ensemble built from folders
        takes its members' largest (a mean is never surer than its members), else lasegm's default."""
        recorded = unsure_limit(self.config, str(self.source))
        if recorded is not None:
            return recorded
        members = getattr(self, "members", None)
        return max(m.unsure_limit for m in members) if members else MAX_UNSURE_PER_MASK_VOXEL


class Segmenter(_Thresholded):
    """A checkpoint's network (ONNX Runtime or PyTorch) plus the exact preprocessing it was trained with."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", expected_arch: str | None = None,
                 largest_component: bool | None = None, flip_tta: bool | None = None, backend: str = "auto",
                 exhaustive: bool = False):
        """largest_component / flip_tta override the checkpoint's recorded post-processing. exhaustive: run the
        network on every slice (no SPARSE_MIN_PROBABILITY skipping; a faithful probability map)."""
        self.source = str(checkpoint)
        self.exhaustive = exhaustive
        self.config = read_checkpoint_config(checkpoint)
        check_arch(self.config, checkpoint, expected_arch)
        self.pre, recorded = checkpoint_recipe(self.config, Path(checkpoint) / CONFIG_FILE)
        self.post = recorded.override(largest_component=largest_component, flip_tta=flip_tta)
        self.runner = open_runner(checkpoint, self.config, backend, device)
        self.backend, self.device = self.runner.name, str(self.runner.device)

    @property
    def networks(self) -> list[tuple[Segmenter, float]]:
        """The networks it runs, with their weights (Ensemble.networks): itself."""
        return [(self, 1.0)]

    def model_probabilities(self, slices: np.ndarray, progress=None, only=None,
                            exhaustive: bool | None = None) -> np.ndarray:
        """Prepared (Z, S, S) slices -> probabilities on the model grid (`only`: see predict_slices; exhaustive:
        None = this segmenter's own choice)."""
        exhaustive = self.exhaustive if exhaustive is None else exhaustive
        return predict_slices(self.runner, slices, self.pre.context, tta=self.post.flip_tta, progress=progress,
                              only=only, slab=slab_depth(self.config), sparse=not exhaustive)

    def probabilities(self, vol: Volume, progress=None, report: dict | None = None) -> np.ndarray:
        """Foreground probability on the scan's own grid. report: gets "input_flags", how the scan is unlike this
        model's training scans (lasegm.ood)."""
        slices, geometry = self.pre.prepare(vol.image, vol.affine)
        self.check_input(slices, vol, report)
        return self.pre.restore(self.model_probabilities(slices, progress), geometry)

    def check_input(self, slices: np.ndarray, vol: Volume, report: dict | None) -> None:
        """report["input_flags"] from the prepared slices, if this model records its training scans and no model
        before it (in an ensemble) has said."""
        reference = self.config.get("input_reference")
        if report is not None and reference and "input_flags" not in report:
            report["input_flags"] = input_flags(slices, vol.spacing, reference)


class Ensemble(_Thresholded):
    """Mean foreground probability of several checkpoints, each run with its own preprocessing and
    mapped back to the scan's grid, so models of different input sizes, windows and slicing planes combine.

    Members with the same preprocessing share one `prepare`, and are averaged on the model grid before
    one `restore` (restore is linear, so this equals restoring each and averaging). A member may itself be an
    ensemble (a multi-view checkpoint): it counts as one member, each of its networks weighing its share."""

    def __init__(self, checkpoints, device: str = "auto", largest_component: bool | None = None,
                 flip_tta: bool | None = None, backend: str = "auto", exhaustive: bool = False,
                 post: Postprocessing | None = None, config: dict | None = None):
        """checkpoints: folders (a multi-view one too), or segmenters already loaded (a server shares them with
        its single models). post / config: the record of a multi-view checkpoint (its members are its views)."""
        self.exhaustive = exhaustive
        # members return raw probabilities; post-processing runs once, on the averaged map
        self.members = [c if isinstance(c, _Thresholded) else
                        load_segmenter(c, device=device, flip_tta=flip_tta, backend=backend) for c in checkpoints]
        # the networks the mean is made of, each with its weight (1, or its share of a multi-view member)
        self.networks = [(n, w / sum(v for _, v in m.networks)) for m in self.members for n, w in m.networks]
        self.device = self.members[0].device
        self.backend = "+".join(sorted({m.backend for m in self.members}))
        self.source = [m.source for m in self.members]
        self.post = post or Postprocessing(
            largest_component=all(m.post.largest_component for m in self.members),
            flip_tta=all(m.post.flip_tta for m in self.members))
        self.post = self.post.override(largest_component=largest_component, flip_tta=flip_tta)
        self.pre = self.members[0].pre  # for display: the first member's orientation
        splits = {m.config.get("split_sha256", "") for m in self.members}
        self.config = config or {"arch": "+".join(m.arch for m in self.members),
                                 "split_sha256": splits.pop() if len(splits) == 1 else "members differ"}

    def probabilities(self, vol: Volume, progress=None, report: dict | None = None) -> np.ndarray:
        """The members' mean probability (report: see Segmenter.probabilities). A network is not run on slices
        where the mean can no longer reach the threshold, whatever it says (the networks so far sum to < threshold
        x M - the networks' weight left, at every pixel); it counts as 0 there. Among networks that slice alike the
        mask is exactly the full mean of the networks' own passes (each sparse, predict_slices: a slice its sparse
        pass skips counts as 0, in the bounds as in the map). A network slicing differently from the first (another
        view) is also not run where the networks left would all have to be >= 1 - VIEW_MIN_PROBABILITY sure to reach
        the threshold: the mask can differ from the full mean's only there. exhaustive=True runs every network on
        every slice (for a faithful probability map)."""
        groups: dict = {}
        for n, w in self.networks:
            groups.setdefault(n.pre, []).append((n, w))
        need = self.post.threshold * len(self.members)
        # bound: per scan slice a network sees, >= the weighted sum so far
        left, bound, stack = float(len(self.members)), None, None
        reach = 1.0  # the most a network left is taken to give
        total = np.zeros(vol.image.shape, np.float32)
        for pre, networks in groups.items():
            slices, geometry = pre.prepare(vol.image, vol.affine)
            # scan slice z is the same as in the stacks before only with the same slicing; else the networks run so
            # far are bounded by their sum's maximum over the scan voxels this slice holds
            if (pre.orientation, geometry.slices) != stack:
                if stack is not None:
                    reach = 1.0 - VIEW_MIN_PROBABILITY
                bound = np.zeros(geometry.kept, np.float32) if stack is None else slice_maxima(total, geometry)
                stack = (pre.orientation, geometry.slices)
            before, summed = bound, np.zeros(slices.shape, np.float32)
            for n, w in networks:
                n.check_input(slices, vol, report)
                only = None if self.exhaustive else open_slices(bound, left, need, reach, geometry.slice_weights)
                # exhaustive: every slice; else each network's own choice (sparse unless it was loaded exhaustive)
                probabilities = n.model_probabilities(slices, progress, only=only, exhaustive=self.exhaustive or None)
                summed += probabilities if w == 1.0 else w * probabilities
                left -= w
                # restore interpolates with convex weights: never above the maximum of the model slices it mixes
                bound = before + restored_maxima(summed.reshape(len(summed), -1).max(axis=1), geometry)
            total += pre.restore(summed, geometry)
        return total / len(self.members)


def open_slices(bound: np.ndarray, weight_left: float, need: float, reach: float = 1.0,
                weights: np.ndarray | None = None) -> np.ndarray:
    """The indices of a network's model slices to run: those that reach a scan slice where the ensemble's summed
    probability can still reach `need` (threshold x members). The networks run so far sum to at most `bound` there
    (per scan slice the network sees), and those left (their weight) could add `reach` each (1, or
    1 - VIEW_MIN_PROBABILITY once the slicing has changed). weights: Geometry.slice_weights (None: model slice z is
    scan slice z). A scan slice gets either all the model slices it is made of or none. The one owner of the skip
    rule."""
    opened = bound + weight_left * reach >= need - 1e-3  # rounding
    return np.flatnonzero(opened if weights is None else (weights[opened] > 0).any(axis=0))


def restored_maxima(model_maxima: np.ndarray, geometry) -> np.ndarray:
    """Per model slice maxima -> per scan slice, the most restore can make of them (its weights are convex)."""
    weights = geometry.slice_weights
    if weights is None:
        return model_maxima
    return np.where(weights > 0, model_maxima[None, :], -np.inf).max(axis=1)


def slice_maxima(array: np.ndarray, geometry) -> np.ndarray:
    """Per slice a model with this geometry sees, the maximum of a scan-grid array over the scan voxels it holds."""
    return geometry.to_model(array)[..., slice(*geometry.slices)].max(axis=(0, 1))


def load_segmenter(checkpoints, device: str = "auto", largest_component: bool | None = None,
                   flip_tta: bool | None = None, backend: str = "auto",
                   expected_arch: str | None = None, exhaustive: bool = False) -> Segmenter | Ensemble:
    """One checkpoint folder (or a list of one) -> Segmenter, or the Ensemble of a multi-view checkpoint's views
    with its recorded post-processing (lasegm.checkpoint); several folders -> their Ensemble. exhaustive: an
    ensemble runs every member on every slice (Ensemble)."""
    seg = _load(checkpoints, device, largest_component, flip_tta, backend, expected_arch, exhaustive)
    seg.unsure_limit  # a bad recorded limit fails here, in one line, not after the first scan has run
    return seg


def _load(checkpoints, device, largest_component, flip_tta, backend, expected_arch, exhaustive):
    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    overrides = dict(device=device, largest_component=largest_component, flip_tta=flip_tta, backend=backend)
    if len(paths) > 1:
        return Ensemble(paths, exhaustive=exhaustive, **overrides)
    views = read_views(paths[0])
    if views is None:
        return Segmenter(paths[0], expected_arch=expected_arch, exhaustive=exhaustive, **overrides)
    config, folders = views
    check_arch(config, paths[0], expected_arch)
    post = Postprocessing.from_dict(config.get("postprocessing"), str(Path(paths[0]) / CONFIG_FILE))
    post = post.override(largest_component=largest_component, flip_tta=flip_tta)
    # the views run with the folder's mirroring choice; their masks are never used, only their probabilities
    views = [Segmenter(f, device=device, flip_tta=post.flip_tta, backend=backend) for f in folders]
    seg = Ensemble(views, post=post, config=config, exhaustive=exhaustive)
    seg.source = str(paths[0])
    return seg


MASK_SUFFIXES = (".nii", ".nii.gz", ".dcm")  # a NIfTI mask, or a DICOM SEG (of a DICOM series)


def save_mask(mask: np.ndarray, like: Volume, path: str | Path) -> Path:
    """The mask as NIfTI (write_mask), or as a DICOM SEG over the scan's series when the path ends in .dcm."""
    if str(path).endswith(".dcm"):
        from lasegm.dicom import write_seg

        return write_seg(mask, like, path)
    return write_mask(mask, like, path)


def write_mask(mask: np.ndarray, like: Volume, path: str | Path) -> Path:
    """Save a uint8 mask with the reference scan's affine and header as stored, declared axes or not (it opens
    over the scan in any viewer)."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(mask.astype(np.uint8), header.get_best_affine(), header)
    img.header.set_slope_inter(1, 0)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def segment_scan(seg, vol: Volume, progress=None) -> tuple[np.ndarray, dict]:
    """The mask of one scan, and what predict reports of it: seconds, backend, volume, and its quality flags
    (codes and messages: the header that looks like the Task02 release's, the input unlike the training scans
    (lasegm.ood), then the result's (lasegm.postprocess.quality_flags))."""
    from lasegm.anatomy import task02_header_warning

    t0 = time.perf_counter()
    report: dict = {}
    probs = seg.probabilities(vol, progress, report)
    mask = seg.post.binarize(probs)
    seconds = time.perf_counter() - t0
    flags = report.get("input_flags", []) + quality_flags(mask, vol.voxel_ml, probs, seg.post.threshold, seg.unsure_limit)
    header_warning = None if vol.axes else task02_header_warning(vol.affine)
    if header_warning:
        flags.insert(0, ("task02_header", header_warning))
    return mask, {"seconds": seconds, "backend": seg.backend, "volume_ml": float(mask.sum() * vol.voxel_ml),
                  "flags": [code for code, _ in flags], "warnings": [message for _, message in flags]}


def run_predict(checkpoint, input_path, output, label=None, overlay=None, animation=None,
                device="auto", quiet=False, largest_component=None, flip_tta=None, backend="auto",
                axes: str | None = None, exhaustive: bool = False) -> dict:
    """axes: the true directions of the scan's voxel axes when its header is wrong (lasegm.anatomy); exhaustive:
    every network on every slice (load_segmenter)."""
    from tqdm import tqdm

    from lasegm import LasegmError
    from lasegm.anatomy import parse_axes

    if not str(output).endswith(MASK_SUFFIXES):
        raise LasegmError(f"{output}: output must end in .nii or .nii.gz (a NIfTI mask) or .dcm (a DICOM SEG)")
    pool = ThreadPoolExecutor(1)  # read the scan while the model loads (both mostly outside the GIL)
    axes = None if axes is None else parse_axes(axes)
    reading = pool.submit(load_volume, input_path, label, axes)
    pool.submit(importlib.import_module, "scipy.ndimage")  # post-processing's 0.3 s import, while the model runs
    pool.shutdown(wait=False)
    seg = load_segmenter(checkpoint, device=device, largest_component=largest_component, flip_tta=flip_tta,
                         backend=backend, exhaustive=exhaustive)
    vol = reading.result()
    bar = tqdm(total=vol.image.shape[2], desc="segment", unit="slice", disable=quiet)

    def progress(done, total):
        if total != bar.total or done < bar.n:  # the next network of an ensemble: the slices it runs on
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    mask, result = segment_scan(seg, vol, progress)
    bar.close()
    save_mask(mask, vol, output)
    result["output"] = str(output)
    if vol.label is not None:
        from lasegm.metrics import case_metrics

        result.update(case_metrics(mask, vol.label, vol.spacing))
    if overlay or animation:
        from lasegm import viz

        # figures in the model's orientation, the way the model saw the scan
        image, geometry = seg.pre.model_grid(vol.image, vol.affine)
        shown = geometry.to_model(mask), None if vol.label is None else geometry.to_model(vol.label)
        if overlay:
            viz.save_grid(image, shown[0], overlay, truth=shown[1], title=Path(input_path).name)
        if animation:
            viz.save_animation(image, shown[0], animation, truth=shown[1])
    return result
