"""The figure behind lasegm.anatomy's fact: la_003's voxel axes run anterior, superior, right (ASR), though every
Task02 header says RAS. Three cuts across voxel axis 2 at physical aspect, with two cues per axis marked.

    python docs/experiments/task02_axes.py --data $LASEGM_DATA   # -> docs/figures/task02-voxel-axes.png
"""

import argparse
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "figures" / "task02-voxel-axes.png"
# (cut index along axis 2, title, [(axis-0 index, axis-1 index, cue, label offset), ...]) read off la_003 by eye
CUTS = [
    (60, "axis 2 = 60 (middle)", [(45, 150, "vertebrae:\nlow axis 0 = posterior", 0, -60),
                                  (200, 150, "sternum, chest wall:\nhigh axis 0 = anterior", 0, -60),
                                  (125, 195, "aortic arch, great vessels:\nhigh axis 1 = superior", 0, 45),
                                  (150, 60, "below the diaphragm:\nlow axis 1 = inferior", 30, -40)]),
    (12, "axis 2 = 12 (low)", [(90, 80, "spleen", -40, -50),
                               (150, 120, "left-ventricular apex\n(low axis 2 = left)", 30, 60)]),
    (118, "axis 2 = 118 (high)", [(140, 95, "liver dome\n(high axis 2 = right)", 40, -60),
                                  (80, 45, "kidney", -40, -30)]),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--case", default="la_003")
    args = p.parse_args()
    img = nib.load(str(Path(args.data) / "imagesTr" / f"{args.case}.nii.gz"))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    zooms = img.header.get_zooms()[:3]
    fig, axes = plt.subplots(1, len(CUTS), figsize=(6 * len(CUTS), 6.4))
    for ax, (k, title, cues) in zip(axes, CUTS):
        cut = data[:, :, k]
        ax.imshow(cut.T, cmap="gray", origin="lower", aspect=zooms[1] / zooms[0], vmax=np.percentile(cut, 99.5))
        for x, y, text, dx, dy in cues:
            ax.annotate(text, (x, y), xytext=(x + dx, y + dy), color="yellow", fontsize=9, ha="center", va="center",
                        bbox={"boxstyle": "round", "fc": "black", "alpha": 0.6},
                        arrowprops={"arrowstyle": "->", "color": "yellow"})
        ax.set_xlabel("voxel axis 0 (header: R; anatomy: A) ->")
        ax.set_ylabel("voxel axis 1 (header: A; anatomy: S) ->")
        ax.set_title(f"{args.case}, cut across voxel axis 2 (header: S; anatomy: R)\n{title}", fontsize=10)
    fig.suptitle("Decathlon Task02_Heart: the header says RAS, the anatomy says ASR", fontsize=12)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=60)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
