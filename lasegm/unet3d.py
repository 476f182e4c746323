"""The 3D U-Net variant: MONAI's DynUNet (nnU-Net's network: 3x3x3 convolutions, instance norm, leaky ReLU,
strided downsampling) behind lasegm's 2D model contract, so one checkpoint format, one predict path and one
ONNX export serve it.

The contract: a model maps a (N, C, S, S) batch of prepared slices to (N, 1, S, S) logits. For this model
the N slices are consecutive: one slab of `slab_depth` slices through the prepared stack, seen as a volume
(1, C, N, S, S). lasegm.predict tiles a scan into overlapping slabs (checkpoint config: model_kwargs.slab_depth),
and training feeds it (B, C, D, S, S) slabs directly. Deep supervision (nnU-Net's: lower decoder outputs scored
too, in training only) makes it commit to the atrium within ~300 steps instead of ~900 (research_log.md,
2026-11-28).
"""

from __future__ import annotations

import torch

from lasegm import LasegmError


class UNet3D(torch.nn.Module):
    volumetric = True  # lasegm.train / lasegm.runtime: 5D tensors (channels_last_3d), batches are slabs

    def __init__(self, in_channels: int = 1, classes: int = 1, filters: tuple[int, ...] = (8, 16, 32, 64, 128),
                 slab_depth: int = 32, deep_supervision: int = 0, encoder_weights: str | None = None):
        """deep_supervision: in training, the outputs of this many decoder levels below the top are returned
        too (upsampled, stacked on dim 1: lasegm.train.loss_terms weighs them); in eval only the top output."""
        super().__init__()
        if encoder_weights:
            raise LasegmError("unet3d has no pretrained weights; use --encoder_weights none")
        self.check({"filters": filters, "slab_depth": slab_depth, "deep_supervision": deep_supervision})
        levels = len(filters)  # slab_depth is only checked here: predict reads it from the checkpoint config
        from monai.networks.nets import DynUNet  # 1.8 s to import: only when a 3D model is built

        strides = [(1, 1, 1)] + [(2, 2, 2)] * (levels - 1)
        self.net = DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=classes,
                           kernel_size=[(3, 3, 3)] * levels, strides=strides, upsample_kernel_size=strides[1:],
                           filters=list(filters), norm_name="instance",
                           act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
                           deep_supervision=deep_supervision > 0, deep_supr_num=max(deep_supervision, 1))

    @staticmethod
    def check(kwargs: dict) -> None:
        """Refuse a slab that the levels cannot halve evenly, or more deep-supervision heads than decoder levels
        below the top (before any data is read)."""
        levels, depth = len(kwargs["filters"]), kwargs["slab_depth"]
        if levels < 2 or depth <= 0 or depth % 2 ** (levels - 1):
            raise LasegmError(f"unet3d: --slab_depth must be a positive multiple of {2 ** (levels - 1)} "
                              f"({levels} levels halve it {levels - 1} times), got {depth}")
        heads = kwargs.get("deep_supervision", 0)
        if not 0 <= heads <= levels - 2:
            raise LasegmError(f"unet3d: --deep_supervision must be 0 to {levels - 2} (the decoder levels between its "
                              f"top and its bottom with {levels} levels), got {heads}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # (D, C, S, S): one slab of consecutive slices, as predict and the ONNX graph pass it
            return self.net(x.permute(1, 0, 2, 3)[None])[0].permute(1, 0, 2, 3)
        return self.net(x)  # (B, C, D, S, S) training slabs
