"""The ONNX Runtime backend: export for every architecture, same masks as PyTorch, no torch needed."""

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REPO, TEST_PREPROCESSING, synthetic_volume, write_nifti

from lasegm import LasegmError
from lasegm.checkpoint import model_folders
from lasegm.cli import main
from lasegm.data import load_volume
from lasegm.metrics import dice
from lasegm.models import ARCHITECTURES, ENSEMBLE_MEMBERS, SERVED, build_model, model_kwargs, save_checkpoint
from lasegm.onnx_export import export_onnx
from lasegm.predict import Segmenter, load_segmenter
from lasegm.preprocess import resize


def _checkpoint(folder, arch, seed=0, half=True, encoder="resnet18"):
    torch.manual_seed(seed)
    kwargs = model_kwargs(arch, encoder, 1, decoder_width=32)
    meta = {"arch": arch, "encoder": encoder, "model_kwargs": kwargs, "preprocessing": TEST_PREPROCESSING}
    return save_checkpoint(folder, build_model(arch, kwargs), meta, half=half)  # fp16 by default, as the served ones


@pytest.mark.parametrize("size_in, size_out", [((200, 200), (160, 160)), ((320, 320), (160, 160)),
                                               ((100, 120), (160, 160)), ((160, 160), (100, 100)),
                                               ((157, 203), (160, 161))])
@pytest.mark.parametrize("mode, kwargs", [("area", {"mode": "area"}),
                                          ("bilinear", {"mode": "bilinear", "align_corners": False}),
                                          ("bilinear_antialias", {"mode": "bilinear", "antialias": True,
                                                                  "align_corners": False})])
def test_numpy_resampling_reproduces_torch_interpolate(size_in, size_out, mode, kwargs):
    """The contract resamples in numpy (no torch at prediction time) with torch's semantics, so the
    checkpoints trained on torch-resampled slices see the same input."""
    x = np.random.default_rng(0).normal(size=(3, *size_in)).astype(np.float32)
    reference = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=size_out, **kwargs)[:, 0]
    np.testing.assert_allclose(resize(x, size_out, mode), reference.numpy(), atol=1e-4)


@pytest.mark.parametrize("arch", [a if a == "unet" else pytest.param(a, marks=pytest.mark.slow) for a in ARCHITECTURES])
def test_every_architecture_exports_and_onnx_runtime_gives_the_same_mask(arch, tmp_path):
    """PSPNet included: its 3x3 and 6x6 pooling bins do not divide the 8x8 feature map of a 64 px input."""
    folder = _checkpoint(tmp_path / arch, arch)
    assert main(["export-onnx", "--checkpoint", str(folder)]) == 0
    assert (folder / "model.onnx").is_file() and not list(folder.glob(".*tmp*"))
    image, _ = synthetic_volume((64, 64, 12))
    scan = write_nifti(tmp_path / "scan.nii.gz", image)
    assert main(["--quiet", "predict", "--checkpoint", str(folder), "--input", str(scan), "--output",
                 str(tmp_path / "m.nii.gz"), "--backend", "onnx"]) == 0
    vol = load_volume(scan)
    probs = {b: Segmenter(folder, backend=b, device="cpu").probabilities(vol) for b in ("onnx", "torch")}
    np.testing.assert_allclose(probs["onnx"], probs["torch"], atol=1e-4)


def test_an_efficientnet_pspnet_exports_and_onnx_runtime_gives_the_same_probabilities(tmp_path):
    """EfficientNet's computed padding hides the feature map's size from the tracer, so even PSPNet's 1x1 and
    2x2 bins, which divide it, could not be exported as adaptive pooling."""
    folder = _checkpoint(tmp_path / "pspnet-b0", "pspnet", encoder="efficientnet-b0")
    assert main(["export-onnx", "--checkpoint", str(folder)]) == 0
    image, _ = synthetic_volume((64, 64, 12))
    vol = load_volume(write_nifti(tmp_path / "scan.nii.gz", image))
    probs = {b: Segmenter(folder, backend=b, device="cpu").probabilities(vol) for b in ("onnx", "torch")}
    np.testing.assert_allclose(probs["onnx"], probs["torch"], atol=1e-4)


@pytest.mark.parametrize("arch", SERVED)
def test_served_checkpoints_agree_across_backends_on_a_real_patient(arch, real_data, tmp_path):
    scan, label = real_data / "imagesTr" / "la_003.nii.gz", real_data / "labelsTr" / "la_003.nii.gz"
    masks = {}
    for backend in ("onnx", "torch"):
        out = tmp_path / f"{backend}.nii.gz"
        assert main(["--quiet", "predict", "--checkpoint", str(REPO / "checkpoints" / arch), "--input", str(scan),
                     "--output", str(out), "--backend", backend, "--axes", "ASR"]) == 0  # a Task02 file
        masks[backend] = np.asarray(nib.load(str(out)).dataobj)
    assert dice(masks["onnx"], masks["torch"]) >= 0.999
    assert dice(masks["onnx"], np.asarray(nib.load(str(label)).dataobj)) > 0.85


def test_predict_on_onnx_needs_neither_torch_nor_wandb_gradio_matplotlib(real_data, tmp_path):
    """A process where `import torch` fails still segments: the CLI's start-up pays only for what it uses."""
    code = (
        "import sys\n"
        "for name in ('torch', 'wandb', 'gradio', 'matplotlib'):\n"
        "    sys.modules[name] = None  # any import of these now raises ImportError\n"
        "from lasegm.cli import main\n"
        f"code = main(['--quiet', 'predict', '--checkpoint', {str(REPO / 'checkpoints' / 'unet')!r}, "
        f"'--input', {str(real_data / 'imagesTr' / 'la_003.nii.gz')!r}, '--axes', 'ASR', "
        f"'--output', {str(tmp_path / 'm.nii.gz')!r}])\n"
        "sys.exit(code)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "on onnx" in run.stdout and (tmp_path / "m.nii.gz").is_file()


def test_onnx_model_rejects_a_wrong_channel_count_clearly():
    from lasegm.checkpoint import read_checkpoint_config
    from lasegm.runtime import OnnxRunner

    folder = model_folders(REPO / "checkpoints" / "unet")[0]  # a multi-view checkpoint: its first view
    runner = OnnxRunner(folder / "model.onnx", read_checkpoint_config(folder)["weights_sha256"])
    assert runner(np.zeros((2, 3, 160, 160), np.float32)).shape == (2, 160, 160)
    with pytest.raises(LasegmError, match=r"\(batch, 3, 160, 160\).*got \(2, 5, 160, 160\)"):
        runner(np.zeros((2, 5, 160, 160), np.float32))


def test_a_stale_missing_or_corrupt_model_onnx_is_never_used_silently(tmp_path, capsys):
    folder = _checkpoint(tmp_path / "unet", "unet")
    image, _ = synthetic_volume((64, 64, 8))
    scan = write_nifti(tmp_path / "scan.nii.gz", image)
    args = ["--quiet", "predict", "--checkpoint", str(folder), "--input", str(scan), "--output",
            str(tmp_path / "m.nii.gz")]
    assert main(args + ["--backend", "onnx"]) == 2  # not exported yet
    assert "lasegm export-onnx --checkpoint" in capsys.readouterr().err

    assert main(["export-onnx", "--checkpoint", str(folder)]) == 0
    onnx_file = (folder / "model.onnx").read_bytes()
    _checkpoint(tmp_path / "unet", "unet", seed=1)  # retrained: new weights, and save_checkpoint replaces the folder
    (folder / "model.onnx").write_bytes(onnx_file)  # the old export put back beside them
    assert main(args + ["--backend", "onnx"]) == 2
    assert "exported from other weights" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="using PyTorch instead"):
        assert main(args) == 0  # auto: falls back to PyTorch, and says so
    assert "on torch" in capsys.readouterr().out

    (folder / "model.onnx").write_bytes(b"not an onnx file")
    assert main(args + ["--backend", "onnx"]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err


def test_committed_onnx_files_belong_to_the_committed_weights():
    import onnxruntime as ort

    for folder in [f for arch in SERVED for f in model_folders(REPO / "checkpoints" / arch)]:
        config = json.loads((folder / "config.json").read_text())
        meta = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).get_modelmeta()
        assert meta.custom_metadata_map["weights_sha256"] == config["weights_sha256"], folder
        assert json.loads(meta.custom_metadata_map["preprocessing"]) == config["preprocessing"]
        # the graph only: its weights are read from model.safetensors, never stored twice
        assert (folder / "model.onnx").stat().st_size < 1e6 < (folder / "model.safetensors").stat().st_size


@pytest.mark.parametrize("half", [True, False])
def test_model_onnx_reads_its_weights_from_the_safetensors_file(half, tmp_path):
    """fp16 or fp32 checkpoints alike: the weights are stored once, and the export still matches PyTorch."""
    folder = _checkpoint(tmp_path / "unet", "unet", half=half)
    path, difference = export_onnx(folder)
    assert path.stat().st_size < 0.01 * (folder / "model.safetensors").stat().st_size and difference < 1e-3


@pytest.mark.slow
def test_publishing_a_checkpoint_writes_its_onnx_beside_it(tmp_path):
    src = _checkpoint(tmp_path / "run", "fpn")
    assert main(["export", "--checkpoint", str(src), "--out", str(tmp_path / "served")]) == 0
    assert (tmp_path / "served" / "model.onnx").is_file()
    shutil.rmtree(tmp_path / "served")
    assert main(["export", "--checkpoint", str(src), "--out", str(tmp_path / "served"), "--onnx", "false"]) == 0
    assert not (tmp_path / "served" / "model.onnx").exists()


def test_onnx_runner_splitting_a_batch_across_cores_changes_nothing():
    from lasegm.checkpoint import read_checkpoint_config
    from lasegm.runtime import OnnxRunner

    folder = model_folders(REPO / "checkpoints" / "fpn")[0]  # a multi-view checkpoint: its first view
    sha = read_checkpoint_config(folder)["weights_sha256"]
    one, split = OnnxRunner(folder / "model.onnx", sha, threads=1), OnnxRunner(folder / "model.onnx", sha, threads=2)
    assert (one.parts, split.parts) == (1, 2)
    x = np.random.default_rng(0).standard_normal((5, 3, 160, 160)).astype(np.float32)
    np.testing.assert_array_equal(split(x), one(x))


def test_predict_slices_runs_only_the_slices_asked_for():
    from lasegm.predict import predict_slices

    seen = []

    def runner(batch):
        seen.append(len(batch))
        return np.full((len(batch), *batch.shape[2:]), 3.0, np.float32)

    probs = predict_slices(runner, np.zeros((10, 8, 8), np.float32), context=1, batch_size=4, only=np.array([2, 5, 6]))
    assert seen == [3]
    assert np.allclose(probs[[2, 5, 6]], 1 / (1 + np.exp(-3.0))) and not probs[[0, 1, 3, 4, 7, 8, 9]].any()


def test_predict_exhaustive_runs_every_slice_from_the_cli(tmp_path, monkeypatch):
    """Sparse slices are the default of predict, one scan or a folder of them; --exhaustive runs every slice."""
    import lasegm.predict

    folder = _checkpoint(tmp_path / "unet", "unet")
    image, _ = synthetic_volume((64, 64, 12))
    scan = write_nifti(tmp_path / "scans" / "scan.nii.gz", image)
    ran, original = [], lasegm.predict.predict_slices
    monkeypatch.setattr(lasegm.predict, "predict_slices",
                        lambda *a, **kw: ran.append(kw["sparse"]) or original(*a, **kw))
    for scans, output, flags in ((scan, tmp_path / "m.nii.gz", []), (scan, tmp_path / "e.nii.gz", ["--exhaustive"]),
                                 (scan.parent, tmp_path / "batch", ["--exhaustive"])):
        ran.clear()
        assert main(["--quiet", "predict", "--checkpoint", str(folder), "--input", str(scans), "--output",
                     str(output), *flags]) == 0
        assert ran == [not flags]


def test_sparse_pass_skips_only_slices_between_two_empty_ones():
    """sparse: every other slice first, then a slice between two only where one of them holds something (>= 5 %);
    a slice both of whose neighbours ran empty counts as 0, whatever it holds (the rule's assumption: an object
    one slice thick, alone, is not an atrium). An edge slice without a neighbour beyond it is always run."""
    from lasegm.predict import predict_slices

    stack = np.zeros((21, 8, 8), np.float32)
    stack[6:10, 2:5, 2:5] = 1.0  # an object four slices thick
    stack[15, 3, 3] = 1.0  # one slice thick, between two empty even slices
    seen = []

    def runner(batch):  # the centre channel decides: +5 where it holds the object, -10 elsewhere
        seen.extend(batch[:, 1].reshape(len(batch), -1).max(axis=1).tolist())
        return np.where(batch[:, 1] > 0, 5.0, -10.0).astype(np.float32)

    full = predict_slices(runner, stack, context=1, batch_size=4)
    assert len(seen) == 21
    seen.clear()
    sparse = predict_slices(runner, stack, context=1, batch_size=4, sparse=True)
    # 11 even slices, then 5, 7, 9 (beside 6 and 8) and 19 never (20 ran empty): 14 in all
    assert len(seen) == 14
    ran = [0, 2, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20]
    np.testing.assert_array_equal(sparse[ran], full[ran])
    assert not np.delete(sparse, ran, axis=0).any()  # skipped: probability 0
    np.testing.assert_array_equal(np.delete(sparse > 0.5, 15, axis=0), np.delete(full > 0.5, 15, axis=0))
    assert full[15].max() > 0.5 and not sparse[15].any()  # the thin object, skipped
    seen.clear()
    only = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 20])  # with `only`: a neighbour outside it never ran
    part = predict_slices(runner, stack, context=1, batch_size=4, only=only, sparse=True)
    assert len(seen) == 10  # 4, 6, 8, 10, 20; then 3 and 11 (2 and 12 never ran: nothing to judge by), 5, 7, 9
    np.testing.assert_array_equal(part[only], full[only])


def test_ensemble_skips_only_slices_it_cannot_change(real_data):
    """A network is run only where the networks before it leave the mean able to reach the threshold: among
    networks that slice alike (PSPNet, FPN) the mask equals the exhaustive ensemble's, in less work; the U-Net's
    views (another slicing) also skip the slices those rule out (VIEW_MIN_PROBABILITY)."""
    from lasegm.predict import Ensemble

    members = [load_segmenter(REPO / "checkpoints" / arch, device="cpu") for arch in ENSEMBLE_MEMBERS]
    full, fast = Ensemble(members, exhaustive=True), Ensemble(members)
    calls = {}
    for n, _ in full.networks:  # count the slices each network is run on (a multi-view member: each view)
        def counted(batch, run=n.runner, name=n.source):
            calls[name] = calls.get(name, 0) + len(batch)
            return run(batch)
        n.runner = counted
    vol = load_volume(real_data / "imagesTr" / "la_003.nii.gz", axes="ASR")  # a Task02 file: its true axes
    full_mask = full.segment(vol)
    everywhere = {n.source: n.pre.geometry(vol.affine, vol.image.shape).depth for n, _ in full.networks}
    assert calls == everywhere
    calls.clear()
    fast_mask = fast.segment(vol)
    assert sum(calls.values()) < sum(everywhere.values()), calls
    if len({n.pre.orientation for n, _ in full.networks}) == 1:
        np.testing.assert_array_equal(fast_mask, full_mask)
    else:  # views: the masks differ at most where a view was skipped (nowhere on this patient's atrium)
        assert dice(fast_mask, full_mask) > 0.999
