"""The README's results tables, generated from the committed records: each served checkpoint's config.json and
out-of-fold table (cv-oof.json) and nnU-Net's per-patient anchor (docs/anchors). tests/test_readme.py checks that
README.md holds exactly this output between its `results` markers.

    python docs/results_table.py            # print
    python docs/results_table.py --write    # replace the block in README.md
"""

import argparse
from pathlib import Path

from lasegm.checkpoint import model_folders, read_checkpoint_config, read_served_config, slicing_planes
from lasegm.compare import paired, read_scores

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = ROOT / "docs" / "anchors" / "nnunet_task02_oof_dice.csv"
NAMES = {"unet": "U-Net", "fpn": "FPN", "pspnet": "PSPNet"}
START, END = "<!-- results:start (python docs/results_table.py --write) -->", "<!-- results:end -->"


def tables() -> str:
    anchor, column = read_scores(ANCHOR)
    rows, per_patient = [], {}
    for arch in ("unet", "fpn", "pspnet"):
        folder = ROOT / "checkpoints" / arch
        config = read_served_config(folder)
        models = model_folders(folder)  # a multi-view checkpoint: one network per plane, of one recipe
        recipe = read_checkpoint_config(models[0])
        planes = slicing_planes(folder)
        scores, _ = read_scores(folder / "cv-oof.json")
        r = paired(scores, anchor)
        per_patient[arch] = scores
        pre, train = recipe["preprocessing"], recipe["train_config"]
        rows.append(f"| {NAMES[arch]} ({recipe['encoder']}, {pre['image_size']} px, {train['epochs']} "
                    f"× {train['samples_per_epoch']} slices; {' + '.join(planes)}) | {r['mean']:.3f} | {r['worst']:.3f} | "
                    f"{r['difference_mean']:+.3f} ± {r['difference_std']:.3f} | {r['better']} / {r['worse']} | "
                    f"{config['cv']['oof_hd95_mm_mean']:.1f} |")
    ref = paired(anchor, anchor)
    head = ("| served model (2.5D; slicing planes) | OOF 3D Dice, 16 patients | worst patient | paired difference "
            "to nnU-Net 3d_fullres | patients better / worse | HD95 (mm) |\n|---|---|---|---|---|---|")
    anchor_row = f"| nnU-Net v2 3d_fullres (published folds, `{ANCHOR.relative_to(ROOT)}`) | {ref['mean']:.3f} | " \
                 f"{ref['worst']:.3f} | | | |"
    cases = sorted(anchor)
    patient_head = ("| patient | nnU-Net 3d_fullres | " + " | ".join(NAMES[a] for a in per_patient) + " |\n"
                    + "|---" * (len(per_patient) + 2) + "|")
    patient_rows = [f"| {c} | {anchor[c]:.3f} | " + " | ".join(f"{per_patient[a][c]:.3f}" for a in per_patient) + " |"
                    for c in cases]
    return "\n".join([head, *rows, anchor_row, "", "<details><summary>Per patient (out of fold)</summary>", "",
                      patient_head, *patient_rows, "", "</details>"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--write", action="store_true", help="replace the block between the markers in README.md")
    args = p.parse_args()
    text = tables()
    if not args.write:
        print(text)
        return
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = content.index(START) + len(START), content.index(END)
    readme.write_text(content[:start] + "\n" + text + "\n" + content[end:])
    print(f"wrote the results block of {readme}")


if __name__ == "__main__":
    main()
