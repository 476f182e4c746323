import json
import shutil

import pytest
import torch

from conftest import TEST_PREPROCESSING

from lasegm import LasegmError
from lasegm.models import ARCHITECTURES, build_model, load_checkpoint, model_kwargs, save_checkpoint

ARCHS = ["pspnet", "fpn", "unet"]


def _meta(arch, kwargs):
    return {"arch": arch, "encoder": kwargs["encoder_name"], "model_kwargs": kwargs,
            "preprocessing": TEST_PREPROCESSING}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_architecture_builds_and_segments(arch, channels):
    kwargs = model_kwargs(arch, "resnet18", channels, decoder_width=32)
    model = build_model(arch, kwargs).eval()
    batch = kwargs.get("slab_depth", 2)  # a 3D model's batch is one slab of consecutive slices
    with torch.no_grad():
        out = model(torch.randn(batch, channels, 64, 64))
    assert out.shape == (batch, 1, 64, 64)


def _sweep_parameters(name: str) -> dict:
    """A committed sweep's parameters, read by the same validating loader `lasegm sweep` uses."""
    from conftest import REPO

    from lasegm.sweep import load_sweep

    return load_sweep(REPO / "sweeps" / name)["parameters"]


@pytest.mark.parametrize("encoder", [e if e == "resnet18" else pytest.param(e, marks=pytest.mark.slow)
                                     for e in _sweep_parameters("encoder.yaml")["encoder"]["values"]])
@pytest.mark.parametrize("arch, depth", [("unet", 5), ("unet", 4), ("pspnet", 0)])
def test_every_swept_encoder_trains_after_pruning_unused_stages(encoder, arch, depth):
    """The encoder sweep must not crash mid-sweep: build (which prunes unused stages), then train a step."""
    kwargs = model_kwargs(arch, encoder, 3, decoder_width=32, encoder_depth=depth)
    model = build_model(arch, kwargs).train()
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 1, 64, 64)


@pytest.mark.slow
def test_every_unet_modification_the_sweep_can_propose_builds_and_runs():
    """A crash in trial 7 of a sweep wastes hours: try every combination of the YAML's values."""
    import itertools

    params = _sweep_parameters("unet_modifications.yaml")
    searched = {k: v["values"] for k, v in params.items() if "values" in v}
    assert {"arch", "decoder_attention", "decoder_width", "encoder_depth", "context"} <= set(searched)
    for combo in itertools.product(*searched.values()):
        o = dict(zip(searched, combo))
        kwargs = model_kwargs(o["arch"], "resnet18", 2 * o["context"] + 1, decoder_width=o["decoder_width"],
                              encoder_depth=o["encoder_depth"], decoder_attention=o["decoder_attention"])
        with torch.no_grad():
            out = build_model(o["arch"], kwargs).eval()(torch.randn(1, 2 * o["context"] + 1, 64, 64))
        assert out.shape == (1, 1, 64, 64), o


@pytest.mark.parametrize("arch", ["unet", "unetplusplus"])
@pytest.mark.parametrize("options", [dict(decoder_attention="scse"), dict(encoder_depth=4), dict(decoder_width=64)])
def test_unet_variants_are_options(arch, options):
    kwargs = model_kwargs(arch, "resnet18", 1, **options)
    model = build_model(arch, kwargs).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    if "decoder_attention" in options:
        assert any("attention" in n.lower() for n, _ in model.named_modules())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_roundtrip(arch, half, tmp_path):
    kwargs = model_kwargs(arch, "resnet18", 1, decoder_width=32)
    model = build_model(arch, kwargs).eval()
    save_checkpoint(tmp_path / "ck", model, _meta(arch, kwargs), half=half)
    loaded, config = load_checkpoint(tmp_path / "ck", expected_arch=arch)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=5e-2 if half else 1e-5, rtol=1e-2 if half else 1e-5)
    assert config["weights_dtype"] == ("float16" if half else "float32")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]


def test_shallow_encoders_store_no_dead_weights():
    """PSPNet (depth 3) and a depth-4 U-Net must not carry ResNet stages they never run."""
    deep = build_model("unet", model_kwargs("unet", "resnet18", 1))
    shallow = build_model("unet", model_kwargs("unet", "resnet18", 1, encoder_depth=4))
    psp = build_model("pspnet", model_kwargs("pspnet", "resnet18", 1))
    assert hasattr(deep.encoder, "layer4") and not hasattr(shallow.encoder, "layer4")
    assert not hasattr(psp.encoder, "layer3") and not hasattr(psp.encoder, "layer4")
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(shallow) < count(deep) - 8_000_000
    with torch.no_grad():
        assert shallow.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_an_efficientnet_pspnet_stores_only_the_blocks_it_runs(tmp_path):
    """The depth-3 PSPNet runs 9 of the B0's 16 blocks: the other 7 (3.2M weights) are not stored, yet the block
    list keeps its length (drop-connect's rate reads it in training); a checkpoint saved with them (before lasegm
    dropped them) still loads with the same logits, and `lasegm export` publishes it without them."""
    import segmentation_models_pytorch as smp
    from safetensors import safe_open

    from lasegm.cli import main

    kw = model_kwargs("pspnet", "efficientnet-b0", 1)
    model = build_model("pspnet", kw).eval()
    assert len(model.encoder._blocks) == 16
    assert {k.split(".")[2] for k in model.state_dict() if k.startswith("encoder._blocks.")} == set(map(str, range(9)))
    assert sum(p.numel() for p in model.parameters()) < 600_000
    full = smp.PSPNet(encoder_weights=None, **kw).eval()  # every block, as lasegm saved it until 2026-12-07
    missing, unexpected = full.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and len(missing) > 100 and all(k.startswith("encoder._") for k in missing)
    x = torch.randn(2, 1, 64, 64)
    save_checkpoint(tmp_path / "old", full, _meta("pspnet", kw), half=True)
    old, _ = load_checkpoint(tmp_path / "old")
    assert main(["export", "--checkpoint", str(tmp_path / "old"), "--out", str(tmp_path / "pub")]) == 0
    published, config = load_checkpoint(tmp_path / "pub")
    with torch.no_grad():
        torch.testing.assert_close(model(x), full(x))
        torch.testing.assert_close(published(x), old(x))
    with safe_open(str(tmp_path / "pub" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(model.state_dict())
    assert config["parameters"] == sum(p.numel() for p in model.parameters())
    assert (tmp_path / "pub" / "model.safetensors").stat().st_size < (tmp_path / "old" / "model.safetensors").stat(
        ).st_size / 4
    assert (tmp_path / "pub" / "model.onnx").is_file()


def test_dropping_the_blocks_never_run_leaves_training_unchanged():
    """The same seeded steps (AdamW with weight decay, drop-connect, gradient clipping) give the same weights with and
    without the B0 blocks a depth-3 PSPNet never runs: dropping them changes the file, not the model."""
    import segmentation_models_pytorch as smp

    kw = model_kwargs("pspnet", "efficientnet-b0", 3)
    trained = []
    for build in (lambda: build_model("pspnet", kw), lambda: smp.PSPNet(encoder_weights=None, **kw)):
        torch.manual_seed(0)
        model = build().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        data = torch.Generator().manual_seed(1)
        for _ in range(2):
            loss = model(torch.randn(4, 3, 64, 64, generator=data)).sigmoid().mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        trained.append(model.state_dict())
    pruned, full = trained
    assert len(pruned) < len(full) and all(torch.equal(v, full[k]) for k, v in pruned.items())


def test_checkpoint_errors(tmp_path):
    unet_kw = model_kwargs("unet", "resnet18", 1, decoder_width=32)
    fpn_kw = model_kwargs("fpn", "resnet18", 1, decoder_width=32)
    save_checkpoint(tmp_path / "unet", build_model("unet", unet_kw), _meta("unet", unet_kw))
    save_checkpoint(tmp_path / "fpn", build_model("fpn", fpn_kw), _meta("fpn", fpn_kw))

    with pytest.raises(LasegmError, match="checkpoint is a unet model, expected fpn"):
        load_checkpoint(tmp_path / "unet", expected_arch="fpn")
    with pytest.raises(LasegmError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nothing")

    # weights of another model under this config: caught by the hash, and without it by the shapes
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "unet", mixed)
    shutil.copy(tmp_path / "fpn" / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(LasegmError, match="do not belong to this config"):
        load_checkpoint(mixed)
    cfg = json.loads((mixed / "config.json").read_text())
    del cfg["weights_sha256"]
    (mixed / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LasegmError, match="do not fit the unet"):
        load_checkpoint(mixed)

    (mixed / "model.safetensors").unlink()
    with pytest.raises(LasegmError, match="model.safetensors: missing"):
        load_checkpoint(mixed)
    (tmp_path / "unet" / "config.json").write_text("{broken")
    with pytest.raises(LasegmError, match="not valid JSON"):
        load_checkpoint(tmp_path / "unet")


def test_unknown_architecture_and_encoder():
    with pytest.raises(LasegmError, match="unknown architecture 'segformer9'"):
        model_kwargs("segformer9", "resnet18", 1)
    with pytest.raises(LasegmError, match="unknown encoder"):
        model_kwargs("unet", "resnet9000", 1)
    with pytest.raises(LasegmError, match="U-Net models only"):
        model_kwargs("fpn", "resnet18", 1, decoder_attention="scse")


@pytest.mark.slow
def test_imagenet_weights_offline_fail_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import (an earlier test may have imported it): without this it
    # tries the network, 20 s of retries on a machine without internet
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LasegmError, match="could not load 'imagenet' weights"):
        build_model("unet", model_kwargs("unet", "resnet18", 1), encoder_weights="imagenet")


def test_export_publishes_a_loadable_copy_with_postprocessing(tmp_path):
    from lasegm.cli import main

    kw = model_kwargs("pspnet", "resnet18", 1)
    save_checkpoint(tmp_path / "run", build_model("pspnet", kw), {**_meta("pspnet", kw),
                    "postprocessing": {"threshold": 0.5, "largest_component": False}})
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "pub"),
                 "--largest_component"]) == 0
    _, config = load_checkpoint(tmp_path / "pub", expected_arch="pspnet")
    assert config["postprocessing"] == {"threshold": 0.5, "largest_component": True, "flip_tta": False}
    (tmp_path / "run" / "model.safetensors").write_bytes(b"broken")
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "pub")]) == 2
    assert load_checkpoint(tmp_path / "pub")[1]["postprocessing"]["largest_component"] is True  # untouched


@pytest.mark.slow
def test_ensemble_averages_members_of_different_architectures_and_sizes(dataset, tmp_path, capsys):
    """`--checkpoint a b` = mean probability of the members, each with its own preprocessing."""
    import nibabel as nib
    import numpy as np

    from lasegm.cli import main
    from lasegm.data import find_cases, load_case
    from lasegm.predict import Ensemble, Segmenter, load_segmenter

    folders = []
    for arch, size in (("fpn", 64), ("pspnet", 96)):
        kw = model_kwargs(arch, "resnet18", 1)
        meta = {**_meta(arch, kw), "preprocessing": {**TEST_PREPROCESSING, "image_size": size},
                "postprocessing": {"threshold": 0.5, "largest_component": True}}
        folders.append(save_checkpoint(tmp_path / arch, build_model(arch, kw), meta))
    vol = load_case(find_cases(dataset)[0])
    ens = load_segmenter(folders, device="cpu")
    assert isinstance(ens, Ensemble) and ens.arch == "fpn+pspnet" and ens.post.largest_component
    assert isinstance(load_segmenter(folders[:1], device="cpu"), Segmenter)
    members = [Segmenter(f, device="cpu").probabilities(vol) for f in folders]
    np.testing.assert_allclose(ens.probabilities(vol), (members[0] + members[1]) / 2, atol=1e-6)

    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split)]) == 0
    assert main(["--quiet", "evaluate", "--checkpoint", *map(str, folders), "--data", str(dataset),
                 "--split_file", str(split), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert result["arch"] == "fpn+pspnet" and result["checkpoint"] == [str(f) for f in folders]
    scan = find_cases(dataset)[0].image
    assert main(["--quiet", "predict", "--checkpoint", *map(str, folders), "--input", str(scan),
                 "--output", str(tmp_path / "m.nii.gz")]) == 0
    assert nib.load(str(tmp_path / "m.nii.gz")).shape == vol.image.shape
