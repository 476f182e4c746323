"""Stage 2: one name -> class table, one build_model(), and safe checkpoints
(the folder's format: lasegm.checkpoint)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lasegm import LasegmError, __version__
from lasegm.checkpoint import CHECKPOINT_FORMAT, CONFIG_FILE, WEIGHTS_FILE, check_arch, read_checkpoint_config
from lasegm.checkpoint import ENSEMBLE_MEMBERS, SERVED  # noqa: F401  (their home is checkpoint: no torch needed)
from lasegm.unet3d import UNet3D
from lasegm.utils import atomic_dir, sha256_file

ARCHITECTURES: dict[str, type[torch.nn.Module]] = {
    "pspnet": smp.PSPNet,
    "fpn": smp.FPN,
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,  # a U-Net variant with nested skip connections
    "unet3d": UNet3D,  # 3D U-Net on slabs of consecutive slices (MONAI DynUNet); train with --context 0
}


def model_kwargs(arch: str, encoder: str, in_channels: int, decoder_width: int = 0,
                 encoder_depth: int = 0, decoder_attention: str = "none", slab_depth: int = 32,
                 deep_supervision: int = 0) -> dict:
    """Map lasegm's architecture-neutral options onto each class's own argument names.

    0 means "the architecture's default" so one config serves all models. unet3d has no encoder:
    decoder_width is its widest level (default 128: 3.1 s per 130-slice scan on 2 CPU cores with ONNX Runtime;
    256 takes 7.2 s), encoder_depth its number of levels (default 5). slab_depth and deep_supervision are unet3d's
    alone (the 2D models ignore them).
    """
    if arch not in ARCHITECTURES:
        raise LasegmError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if arch == "unet3d":
        if decoder_attention != "none":
            raise LasegmError("--decoder_attention applies to the 2D U-Net models only, not unet3d")
        widest, levels = decoder_width or 128, encoder_depth or 5
        filters = [max(widest >> (levels - 1 - i), 8) for i in range(levels)]
        kw = {"in_channels": in_channels, "classes": 1, "filters": filters, "slab_depth": slab_depth}
        if deep_supervision:  # recorded only when used: older checkpoints rebuild unchanged
            kw["deep_supervision"] = deep_supervision
        UNet3D.check(kw)
        return kw
    if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
        raise LasegmError(f"unknown encoder {encoder!r} (see segmentation_models_pytorch's encoder list)")
    kw: dict = {"encoder_name": encoder, "in_channels": in_channels, "classes": 1}
    if encoder_depth:
        kw["encoder_depth"] = encoder_depth
    if arch in ("unet", "unetplusplus"):
        depth = encoder_depth or 5
        if decoder_width:
            # scSE squeezes channels by 16, so with attention no decoder stage may be narrower than 16
            narrowest = 16 if decoder_attention == "scse" else 4
            kw["decoder_channels"] = [max(decoder_width >> i, narrowest) for i in range(depth)]
        elif encoder_depth:
            kw["decoder_channels"] = [256, 128, 64, 32, 16][:depth]
        if decoder_attention != "none":
            kw["decoder_attention_type"] = decoder_attention
    elif decoder_attention != "none":
        raise LasegmError(f"--decoder_attention applies to U-Net models only, not {arch}")
    elif arch == "fpn" and decoder_width:
        # the segmentation head uses GroupNorm(32): keep its width a multiple of 32
        kw.update(decoder_pyramid_channels=decoder_width,
                  decoder_segmentation_channels=max(decoder_width // 2 // 32 * 32, 32))
    elif arch == "pspnet" and decoder_width:
        kw["psp_out_channels"] = decoder_width
    return kw


def build_model(arch: str, kwargs: dict, encoder_weights: str | None = None) -> torch.nn.Module:
    try:
        model = ARCHITECTURES[arch](encoder_weights=encoder_weights, **kwargs)
    except LasegmError:
        raise
    except KeyError:
        raise LasegmError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}") from None
    except Exception as e:  # smp raises plain errors for bad depths, missing weights, no internet
        if encoder_weights:
            raise LasegmError(
                f"could not load {encoder_weights!r} weights for encoder {kwargs.get('encoder_name')!r} "
                f"(they are downloaded on first use; offline, use --encoder_weights none): {e}"
            ) from None
        raise LasegmError(f"cannot build {arch} with {kwargs}: {e}") from None
    if getattr(model, "volumetric", False):
        return model
    return drop_unused_encoder_stages(model, kwargs.get("in_channels", 3))


def drop_unused_encoder_stages(model: torch.nn.Module, in_channels: int) -> torch.nn.Module:
    """Delete encoder stages that a shallow encoder_depth never runs, and the blocks of a stage list that it stops
    before (EfficientNet's 16 blocks in one ModuleList, of which a depth-3 PSPNet runs 9).

    smp keeps them, and they dominate the size: ResNet-18's layer4 is 8.4M of its 11M weights, the B0's last seven
    blocks 3.2M of the depth-3 PSPNet's 3.6M. A block is replaced by a weightless nn.Identity rather than removed,
    so the list keeps its length (EfficientNet's drop-connect rate depends on it) and training is unchanged.
    model.dropped_weights holds the prefixes of the weights dropped, which checkpoints saved with them may carry.
    """
    # Hook every submodule, not just the stages: some encoders (MobileNetV2) iterate over a stage's
    # layers without calling the stage itself. A stage is used if any module inside it ran.
    called: set[str] = set()
    hooks = [module.register_forward_hook(lambda *_, n=name: called.add(n))
             for name, module in model.encoder.named_modules() if name]
    was_training = model.training
    with torch.no_grad():
        model.eval()
        model.encoder(torch.zeros(1, in_channels, 64, 64))
    for h in hooks:
        h.remove()
    ran = {".".join(n.split(".")[:i]) for n in called for i in range(1, n.count(".") + 2)}  # a module or within it
    dropped = []
    for name, child in list(model.encoder.named_children()):
        if not any(True for _ in child.parameters()):
            continue
        if name not in ran:
            delattr(model.encoder, name)
            dropped.append(f"encoder.{name}.")
        elif isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            for i, block in enumerate(child):  # a list the encoder iterates and leaves early
                if f"{name}.{i}" not in ran and any(True for _ in block.parameters()):
                    child[i] = torch.nn.Identity()
                    dropped.append(f"encoder.{name}.{i}.")
    model.dropped_weights = tuple(dropped)
    return model.train(was_training)


def dropped_weights(model: torch.nn.Module) -> tuple[str, ...]:
    """The prefixes of the weights build_model dropped from the model (drop_unused_encoder_stages)."""
    return getattr(model, "dropped_weights", ())


def holds_dropped_weights(weights: str | Path, model: torch.nn.Module) -> bool:
    """Whether a weights file holds weights of blocks the model dropped (saved before lasegm dropped them)."""
    with safe_open(str(weights), "pt") as f:
        return any(k.startswith(dropped_weights(model)) for k in f.keys())


def cpu_state_dict(model: torch.nn.Module, half: bool = False, prefix: str = "") -> dict[str, torch.Tensor]:
    """The weights as safetensors can write them: on the CPU, each its own copy. Cloned: safetensors refuses
    tensors that share memory (the 3D U-Net's deep-supervision heads are its skip layers' own), and .half() copies
    only floating-point ones."""
    return {prefix + k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous().clone()
            for k, v in model.state_dict().items()}


def save_checkpoint(out_dir: str | Path, model: torch.nn.Module, meta: dict, half: bool = False) -> Path:
    """Write weights + config atomically: a crash never leaves a half-written checkpoint."""
    out_dir = Path(out_dir)
    state = cpu_state_dict(model, half)
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        config = {
            "format": CHECKPOINT_FORMAT,
            "lasegm_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "weights_dtype": "float16" if half else "float32",
            **meta,
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def load_checkpoint(ckpt_dir: str | Path, expected_arch: str | None = None,
                    device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from config.json and load its weights; no pickle is involved."""
    ckpt_dir = Path(ckpt_dir)
    config = read_checkpoint_config(ckpt_dir)
    check_arch(config, ckpt_dir, expected_arch)
    arch = config["arch"]
    weights = ckpt_dir / WEIGHTS_FILE
    expected_sha = config.get("weights_sha256")
    if expected_sha and sha256_file(weights) != expected_sha:
        raise LasegmError(f"{weights}: weights do not belong to this config.json (sha256 mismatch)")
    model = build_model(arch, config["model_kwargs"])
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise LasegmError(f"{weights}: unreadable safetensors file ({e})") from None
    reference = model.state_dict()
    # weights of blocks the model never runs, which checkpoints saved before lasegm dropped them still hold
    state = {k: v for k, v in state.items() if k in reference or not k.startswith(dropped_weights(model))}
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise LasegmError(
            f"{weights}: weights do not fit the {arch}/{config['model_kwargs'].get('encoder_name')} "
            f"model in {CONFIG_FILE} (from another model?): {first[:200]}"
        ) from None
    return model.to(device).eval(), config
