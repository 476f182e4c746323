"""`lasegm <command>`: download, analyze, split, train, cv, evaluate, predict, export, export-onnx, compare, sweep.

Imports stay inside the commands: `lasegm predict` on the ONNX backend never loads torch, W&B or Gradio."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lasegm import LasegmError, __version__
from lasegm.config import add_config_flags, config_from_args, str2bool
from lasegm.runtime import BACKENDS

from lasegm.split import DEFAULT_FOLDS_FILE
from lasegm.split import DEFAULT_SPLIT_FILE as SPLIT_DEFAULT

DATA_HELP = ("MSD task folder with imagesTr/ labelsTr/ (default: $LASEGM_DATA, else the Task02_Heart that `lasegm "
             "download` unpacked into its default folder)")
DATA_AXES_HELP = ("the directions the data's voxel axes run: auto (default; a Decathlon Task02_Heart folder, known by "
                  "its dataset.json, has headers that say RAS for voxel axes that run ASR, and is relabelled), header "
                  "(trust every header), or three letters for every file (e.g. ASR)")


TRAINING_COMMANDS = ("train", "cv")


def build_parser(arch_choices: bool = True) -> argparse.ArgumentParser:
    """arch_choices=False: skip loading the architecture list (torch) when no training command runs."""
    p = argparse.ArgumentParser(prog="lasegm", description="Left-atrium segmentation of cardiac MRI "
                                "(Decathlon Task02_Heart) with 2D PSPNet / FPN / U-Net.")
    p.add_argument("--version", action="version", version=f"lasegm {__version__}")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("download", help="fetch, verify and unpack Task02_Heart")
    d.add_argument("--dest", default=None, help="folder to unpack into (default: $XDG_DATA_HOME/lasegm, i.e. "
                   "~/.local/share/lasegm, where every command finds Task02_Heart without --data)")
    d.add_argument("--archive", help="use an already downloaded Task02_Heart.tar instead of fetching")
    d.add_argument("--url", default=None, help="override the download address")
    d.add_argument("--md5", default=None, help="override the expected md5")

    a = sub.add_parser("analyze", help="per-case statistics, duplicate scans, a patient figure")
    a.add_argument("--data", help=DATA_HELP)
    a.add_argument("--data_axes", "--data-axes", default="auto", help=DATA_AXES_HELP)
    a.add_argument("--out", default="runs/analysis", help="output folder (default: runs/analysis)")
    a.add_argument("--case", help="case shown in the figure (default: the first)")

    s = sub.add_parser("split", help="write the fixed patient-level train/val/test split, or K folds")
    s.add_argument("--data", help=DATA_HELP)
    s.add_argument("--data_axes", "--data-axes", default="auto", help=DATA_AXES_HELP)
    s.add_argument("--split_file", "--split-file", default=None,
                   help=f"(default: {SPLIT_DEFAULT}, or {DEFAULT_FOLDS_FILE} with --folds)")
    s.add_argument("--folds", type=int, default=0, help="K > 1: patient-level K-fold cross-validation file instead")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--val_fraction", type=float, default=0.15)
    s.add_argument("--test_fraction", type=float, default=0.25)
    s.add_argument("--force", action="store_true", help="replace an existing, different split")

    t = sub.add_parser("train", help="train one model (flags = config fields, for wandb agent)")
    add_config_flags(t, arch_choices=arch_choices)

    c = sub.add_parser("cv", help="cross-validate a recipe: one training per fold, out-of-fold table")
    c.add_argument("--name", default="", help="the CV's name: runs/cv/NAME and the W&B group "
                   "(default: <arch>-<encoder>-<time>)")
    c.add_argument("--folds", type=int, nargs="*", default=None, metavar="K",
                   help="train only these folds (none given, with --final: only the final model); with "
                        "--ensemble, score only these (a partial table, oof-folds-K.json)")
    c.add_argument("--final", action="store_true",
                   help="also train the recipe on every patient (runs/cv/NAME/final: the model to serve, e.g. "
                        "with `lasegm export`); its checkpoint carries the out-of-fold table (cv-oof.json)")
    c.add_argument("--jobs", type=int, default=1, help="folds trained at once, each in its own process (GPU)")
    c.add_argument("--collect_only", "--collect-only", action="store_true",
                   help="only (re)write the out-of-fold table from finished folds")
    c.add_argument("--reevaluate", action="store_true",
                   help="segment each fold's held-out patients again with its checkpoint and this command's "
                        "--largest_component / --flip_tta (post-processing chosen on every patient, no retraining); "
                        "writes oof-lc-<bool>-tta-<bool>.json; with --final, the final model takes that "
                        "post-processing and that table")
    c.add_argument("--ensemble", nargs="+", default=None, metavar="CV",
                   help="train nothing: score the ensemble of these finished CVs (runs/cv/CV, or a CV's folder "
                        "given as a path, e.g. a record without weights) out of fold, each fold's probability maps "
                        "or checkpoints averaged on its held-out patients; writes runs/cv/NAME/oof.json. CVs "
                        "joined by commas (A,B) are the views of one model: together they weigh as one member")
    add_config_flags(c, arch_choices=arch_choices)
    c.set_defaults(split_file=DEFAULT_FOLDS_FILE)

    e = sub.add_parser("evaluate", help="per-patient 3D Dice, IoU, HD95, volumes on a split part")
    e.add_argument("--checkpoint", required=True, nargs="+", metavar="FOLDER",
                   help="checkpoint folder (model.safetensors + config.json); several = their ensemble")
    e.add_argument("--data", help=DATA_HELP)
    e.add_argument("--data_axes", "--data-axes", default="auto", help=DATA_AXES_HELP)
    e.add_argument("--split_file", "--split-file", default=SPLIT_DEFAULT)
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="part to evaluate")
    e.add_argument("--out", help="output folder (default: runs/evaluate/<checkpoint>-<split>)")
    e.add_argument("--device", default="auto")
    _backend_flag(e)
    _exhaustive_flag(e)
    _postprocess_flags(e)

    r = sub.add_parser("predict", help="segment one scan and write a NIfTI mask in its space")
    r.add_argument("--checkpoint", required=True, nargs="+", metavar="FOLDER",
                   help="checkpoint folder; several = the ensemble (mean probability) of them, run in the "
                        "order given: only the last skips slices, so name the slowest last")
    r.add_argument("--input", required=True,
                   help="a scan (.nii / .nii.gz, or a folder holding one DICOM series); with an --output folder: a "
                        "folder or .zip of many (NIfTI files and DICOM series, found below it)")
    r.add_argument("--output", required=True,
                   help="the mask to write (.nii.gz), or a folder: one mask per scan (<name>.nii.gz) and summary.csv")
    r.add_argument("--output_format", "--output-format", default="nifti", choices=("nifti", "dicom-seg"),
                   help="with an --output folder: NIfTI masks (default), or a DICOM SEG over each DICOM series "
                        "(3D Slicer, OHIF; one scan: --output FILE.dcm)")
    r.add_argument("--skip_existing", "--skip-existing", action="store_true",
                   help="with an --output folder: skip scans whose mask is already there (a rerun after an "
                        "interruption)")
    r.add_argument("--label", help="ground truth, for metrics and the overlay's contour")
    r.add_argument("--axes", default=None, metavar="CODES",
                   help="the true directions of the scan's voxel axes when its header is wrong, e.g. ASR (axis 0 "
                        "anterior, 1 superior, 2 right; a Decathlon Task02_Heart file); default: trust the header")
    r.add_argument("--overlay", help="PNG grid of slices with the prediction")
    r.add_argument("--animation", help="GIF through the volume")
    r.add_argument("--device", default="auto")
    _backend_flag(r)
    _exhaustive_flag(r)
    _postprocess_flags(r)

    x = sub.add_parser("export", help="publish a run's checkpoint (e.g. to checkpoints/unet)")
    x.add_argument("--checkpoint", required=True, nargs="+", metavar="FOLDER",
                   help="source checkpoint folder; several: models of one architecture slicing along different "
                        "planes, published as one multi-view checkpoint (the mean of their probabilities)")
    x.add_argument("--out", required=True, help="destination folder (replaced atomically)")
    x.add_argument("--cv_table", "--cv-table", default=None, metavar="OOF_JSON",
                   help="with several checkpoints: their views' out-of-fold table (runs/cv/NAME/oof.json of "
                        "`lasegm cv --ensemble`), carried as the folder's cv-oof.json")
    x.add_argument("--onnx", type=str2bool, nargs="?", const=True, default=True, metavar="BOOL",
                   help="also write model.onnx for ONNX Runtime (default: true)")
    x.add_argument("--unsure_limit", "--unsure-limit", type=float, default=None, metavar="X",
                   help="the quality check flags a mask with more than X unsure voxels (0.1 < p < 0.9) per mask "
                        "voxel; choose it above the model's out-of-fold results read correctly (docs/experiments/"
                        "qc_wrong_axes.py --maps) and below its wrong readings (default: the recorded one, else 0.45)")
    _postprocess_flags(x)

    o = sub.add_parser("export-onnx", help="write model.onnx into checkpoint folders (fast CPU inference)")
    o.add_argument("--checkpoint", required=True, nargs="+", metavar="FOLDER")

    q = sub.add_parser("compare", help="paired per-patient comparison of an out-of-fold table with a reference")
    q.add_argument("table", nargs="+", help="a lasegm out-of-fold table (runs/cv/NAME/oof.json or .csv, "
                   "checkpoints/ARCH/cv-oof.json), or several of different patients: e.g. the finished folds "
                   "of a cross-validation (runs/cv/NAME/fold-K/summary.json)")
    q.add_argument("--reference", required=True, help="a CSV with a 'case' column, e.g. nnU-Net's out-of-fold Dice")
    q.add_argument("--reference_column", "--reference-column", default=None,
                   help="its column to compare with (default: its first numeric column)")
    q.add_argument("--out", help="also write the comparison as JSON")

    w = sub.add_parser("sweep", help="run a W&B sweep YAML locally, without a W&B server")
    w.add_argument("sweep_yaml")
    w.add_argument("--count", type=int, default=4, help="number of trials")
    w.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="train flags fixed for every trial; they replace the YAML's fixed values (e.g. epochs=2)")
    w.add_argument("--out", default="runs/sweeps", help="folder for trial runs and the ranking")
    w.add_argument("--jobs", type=int, default=1, help="for a sweep of `lasegm cv`: folds trained at once")
    return p



def _backend_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="onnx: the checkpoint's model.onnx on ONNX Runtime; torch: PyTorch; auto (default): "
                        "ONNX on CPU when model.onnx and onnxruntime are there, else PyTorch")


def _exhaustive_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exhaustive", action="store_true",
                   help="run every network on every slice: faithful probability maps, 1.2-1.35x the time (by "
                        "default a slice between two without atrium is skipped; docs/speed.md, sparse slices)")


def _postprocess_flags(p: argparse.ArgumentParser) -> None:
    for name, what in (("largest_component", "keep only the largest connected component"),
                       ("flip_tta", "average with the left-right flipped prediction")):
        p.add_argument(f"--{name}", f"--{name.replace('_', '-')}", type=str2bool, nargs="?", const=True,
                       default=None, metavar="BOOL", help=f"{what} (default: as recorded in the checkpoint)")


def main(argv: list[str] | None = None) -> int:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    args = build_parser(arch_choices=bool(words) and words[0] in TRAINING_COMMANDS).parse_args(argv)
    try:
        return _dispatch(args)
    except LasegmError as e:
        print(f"lasegm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    quiet = args.quiet
    if args.command == "download":
        from lasegm.download import TASK02_MD5, TASK02_URL, run_download

        from lasegm.data import default_data_dir, download_dir

        path = run_download(args.dest or download_dir(), url=args.url or TASK02_URL, md5=args.md5 or TASK02_MD5,
                            archive=args.archive, quiet=quiet)
        found = default_data_dir()
        hint = ("found by every command without --data" if found is not None and found.resolve() == path.resolve()
                else f"use --data {path} or set LASEGM_DATA={path}")
        print(f"Task02_Heart ready at {path}  ({hint})")
    elif args.command == "analyze":
        from lasegm.analyze import format_table, run_analyze

        report = run_analyze(args.data or _env_data(), args.out, args.case, quiet=quiet, data_axes=args.data_axes)
        print(format_table(report["cases"]))
        t = report["totals"]
        print(f"\n{t['cases']} cases, {t['slices']} slices ({t['slices_with_atrium']} with atrium, "
              f"{t['empty_slices']} empty); atrium {t['atrium_ml_min']}-{t['atrium_ml_max']} mL "
              f"(mean {t['atrium_ml_mean']}); shapes {t['shapes']}; spacings {t['spacings_mm']}")
        if report["duplicates"]:
            print("DUPLICATE SCANS (kept in the same split part):")
            for d in report["duplicates"]:
                print(f"  {d['a']} ~ {d['b']}: {d['kind']} (thumbnail correlation {d['thumbnail_correlation']})")
        else:
            print("no duplicate scans found")
        print(f"wrote {args.out}/analysis.json, analysis.csv and {report['figure']}")
    elif args.command == "split":
        from lasegm.analyze import scan_dataset
        from lasegm.split import make_folds, make_split, save_split

        report = scan_dataset(args.data or _env_data(), quiet=quiet, data_axes=args.data_axes)
        ids, groups = [r["case"] for r in report["cases"]], report["duplicate_groups"]
        if args.folds > 1:
            path = args.split_file or DEFAULT_FOLDS_FILE
            split = make_folds(ids, groups, args.folds, args.seed)
            save_split(path, split, force=args.force)
            for i, fold in enumerate(split["folds"]):
                print(f"fold {i} ({len(fold):2d}): {' '.join(fold)}")
        else:
            path = args.split_file or SPLIT_DEFAULT
            split = make_split(ids, groups, args.seed, args.val_fraction, args.test_fraction)
            save_split(path, split, force=args.force)
            for part in ("train", "val", "test"):
                print(f"{part:5s} ({len(split[part]):2d}): {' '.join(split[part])}")
        if split["duplicate_groups"]:
            print(f"duplicate groups kept together: {split['duplicate_groups']}")
        print(f"wrote {path}")
    elif args.command == "train":
        from lasegm.train import train

        cfg = config_from_args(args)
        summary = train(cfg, quiet=quiet)
        scores = (f"val 3D Dice {summary['checkpoint_val_dice_3d']:.4f}; best epoch {summary['best_epoch']} "
                  f"({summary['best_val_dice_3d']:.4f})" if summary["checkpoint_val_dice_3d"] is not None else
                  "trained on all folds, not validated (its recipe's cross-validation scores it)")
        print(f"kept epoch {summary['checkpoint_epoch']} ({summary['selection']}): {scores}; "
              f"{summary['training_time_s']:.0f}s; checkpoint {summary['checkpoint']}")
    elif args.command == "cv":
        from lasegm.cv import run_cv

        import time

        cfg = config_from_args(args)
        name = args.name or f"{cfg.arch}-{cfg.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_cv(cfg, name, folds=args.folds, jobs=args.jobs, quiet=quiet, collect_only=args.collect_only,
               reevaluate=args.reevaluate, final=args.final, ensemble=args.ensemble)
    elif args.command == "evaluate":
        from lasegm.evaluate import report_table, run_evaluate

        result = run_evaluate(args.checkpoint, out_dir=args.out, data=args.data or _env_data(),
                              split_file=args.split_file, part=args.split, device=args.device, quiet=quiet,
                              backend=args.backend, largest_component=args.largest_component, flip_tta=args.flip_tta,
                              data_axes=args.data_axes, exhaustive=args.exhaustive)
        print(report_table(result))
        d = result["summary"]["dice"]
        print(f"{result['arch']} on {args.split} ({d['n']} patients): 3D Dice {d['mean']:.4f} ± {d['std']:.4f}; "
              f"wrote {result['out_dir']}/evaluation.json and .csv")
    elif args.command == "predict" and not args.output.endswith(_mask_suffixes()):
        from lasegm.anatomy import parse_axes
        from lasegm.batch import run_batch
        from lasegm.predict import load_segmenter

        if args.label or args.overlay or args.animation:
            raise LasegmError("--label, --overlay and --animation are for one scan (--output FILE.nii.gz)")
        axes = None if args.axes is None else parse_axes(args.axes)
        seg = load_segmenter(args.checkpoint, device=args.device, largest_component=args.largest_component,
                             flip_tta=args.flip_tta, backend=args.backend, exhaustive=args.exhaustive)
        res = run_batch(seg, args.input, args.output, axes=axes, skip_existing=args.skip_existing, quiet=quiet,
                        output_format=args.output_format)
        ok = sum(r["status"] == "ok" for r in res["rows"])
        print(f"{ok} of {len(res['rows'])} scans segmented, {res['failed']} failed, {res['flagged']} flagged; "
              f"wrote {res['summary']}")
        return 1 if res["failed"] else 0
    elif args.command == "predict":
        from lasegm.predict import run_predict

        res = run_predict(args.checkpoint, args.input, args.output, label=args.label, overlay=args.overlay,
                          animation=args.animation, device=args.device, quiet=quiet, backend=args.backend,
                          axes=args.axes,
                          largest_component=args.largest_component, flip_tta=args.flip_tta,
                          exhaustive=args.exhaustive)
        for warning in res["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        msg = f"wrote {res['output']} ({res['volume_ml']:.1f} mL atrium, {res['seconds']:.2f}s on {res['backend']})"
        if "dice" in res:
            msg += f"; 3D Dice {res['dice']:.4f}"
            if math.isfinite(res["hd95_mm"]):
                msg += f", HD95 {res['hd95_mm']:.2f} mm"
        print(msg)
    elif args.command == "export":
        from lasegm.export import export_checkpoint, export_views

        post = {"largest_component": args.largest_component, "flip_tta": args.flip_tta}
        if len(args.checkpoint) > 1 or args.cv_table:
            dest = export_views(args.checkpoint, args.out, post, args.cv_table, onnx=args.onnx,
                                unsure=args.unsure_limit)
        else:
            dest = export_checkpoint(args.checkpoint[0], args.out, post, onnx=args.onnx, unsure=args.unsure_limit)
        print(f"exported {' '.join(args.checkpoint)} to {dest}")
    elif args.command == "export-onnx":
        from lasegm.checkpoint import model_folders
        from lasegm.onnx_export import export_onnx

        for folder in [f for c in args.checkpoint for f in model_folders(c)]:  # a multi-view checkpoint: each view
            path, difference = export_onnx(folder)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; ONNX Runtime vs PyTorch: max logit "
                  f"difference {difference:.1e})")
    elif args.command == "compare":
        from lasegm.compare import format_report, paired, read_scores, read_tables
        from lasegm.utils import write_json

        scores, column = read_tables(args.table)
        reference, ref_column = read_scores(args.reference, args.reference_column)
        result = paired(scores, reference)
        name = Path(args.table[0]).name if len(args.table) == 1 else f"{len(args.table)} tables"
        print(format_report(result, f"{name} {column}", ref_column))
        if args.out:
            tables = args.table[0] if len(args.table) == 1 else args.table
            write_json(args.out, {"table": tables, "reference": args.reference, "reference_column": ref_column,
                                  **result})
    elif args.command == "sweep":
        from lasegm.sweep import run_local_sweep

        run_local_sweep(args.sweep_yaml, count=args.count, fixed=args.set, out_dir=args.out, quiet=quiet,
                        jobs=args.jobs)
    return 0


def _mask_suffixes() -> tuple[str, ...]:
    """An --output ending in one of these is one scan's mask; anything else is a batch's folder."""
    from lasegm.predict import MASK_SUFFIXES

    return MASK_SUFFIXES


def _env_data():
    from lasegm.data import default_data_dir

    return default_data_dir()
