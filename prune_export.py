#!/usr/bin/env python
"""Remove the blocks an ε-ResNet discarded and export the reduced network, verified, for serving.

Reads LOGDIR (plan.json, checkpoints, discards.jsonl) and never writes into it. EXPORT_DIR gets the
SavedModel in EXPORT_DIR/1/ (TensorFlow Serving's layout), EXPORT_DIR/model.tflite (float32), and
plan.json, report.md, report.json beside them. Both take raw uint8 RGB images [batch, H, W, 3] as `image`
and return `logits`, `probabilities` and `classes` (signature `serving_default`); the dataset
preprocessing is inside the graph.

Examples:
  python prune_export.py train_log/cifar10-n18-eps2.5 --out export/cifar10-n18
  python prune_export.py LOGDIR --out EXPORT --checkpoint 390000 --calib-batches 20
  python prune_export.py LOGDIR --out EXPORT --criterion ema      # the released code's rule
  python prune_export.py LOGDIR --out EXPORT --quantize dynamic     # also model_dynamic.tflite (int8 weights)
  python prune_export.py LOGDIR --out EXPORT --version 2            # add EXPORT/2/ to an earlier export
  python prune_export.py LOGDIR --out EXPORT --baseline PLAIN_LOGDIR  # also the plain ResNet's error, same images
  python prune_export.py LOGDIR --out EXPORT --epsilon 9.5          # a point of the ε frontier (eps_resnet.frontier)
  python prune_export.py LOGDIR --out EXPORT --recompute-bn 20      # BatchNorm statistics of the reduced network
  python prune_export.py LOGDIR --out EXPORT --channel-threshold 0.05  # channels too (--channel-penalty runs)
"""
import argparse
import sys

import eps_resnet  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from eps_resnet import cli, guard
from eps_resnet.export_request import CRITERIA, QUANTIZE, ExportRequest


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    p.add_argument("logdir", metavar="LOGDIR", help="log directory of a training run")
    p.add_argument("--out", metavar="EXPORT_DIR", required=True, help="directory to create for the SavedModel")
    cli.add_checkpoint_data_flags(p)
    p.add_argument("--criterion", choices=CRITERIA, default="calibration",
                   help="calibration: max|F| < ε on every held-out image; ema: moving average of is_discarded == 1")
    p.add_argument("--no-verify", action="store_true", help="skip comparing the export with the gated model")
    p.add_argument("--no-timing", action="store_true", help="skip the CPU latency measurements")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export in EXPORT_DIR (only after the new one verified)")
    p.add_argument("--version", type=int, default=1, metavar="N",
                   help="the SavedModel goes to EXPORT_DIR/N/; a new N adds a version to an earlier export")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="also write model_dynamic.tflite with dynamic-range (int8) weights, measured and reported")
    p.add_argument("--baseline", metavar="PLAIN_LOGDIR", default=None,
                   help="log directory of a plain run (--plain) on the same data: its validation error on the same "
                        "held-out images goes into the report as baseline_val_error")
    p.add_argument("-e", "--epsilon", type=float, default=None, metavar="EPS",
                   help="export at a larger ε than the trained one (a point of python -m eps_resnet.frontier): also "
                        "remove the blocks whose largest calibration response is below it; the export is verified "
                        "against that reduced network and the report gives the error change (default: the trained ε)")
    p.add_argument("--recompute-bn", type=int, default=0, metavar="N",
                   help="re-estimate the reduced network's BatchNorm statistics on N batches of 64 training images "
                        "(and the --baseline's alike) instead of keeping training's moving averages, which mix the "
                        "networks of gates that hovered near ε; not in the paper (docs/FIDELITY.md); the export is "
                        "verified against the reduced network with the new statistics (default 0: keep them)")
    p.add_argument("--channel-threshold", type=float, default=None, metavar="NORM",
                   help="also remove every channel whose norm (over the kernel slices that write and read it, "
                        "eps_resnet.channels) is below NORM in the kept network; verified against that network with "
                        "those channels zeroed (default: 0.05 for a run trained with --channel-penalty, else 0: none)")
    args = p.parse_args()
    request = ExportRequest(checkpoint=args.checkpoint, data_dir=args.data, calib_batches=args.calib_batches,
                            criterion=args.criterion, verify=not args.no_verify, force=args.force,
                            measure=not args.no_timing, version=args.version, quantize=args.quantize,
                            baseline=args.baseline, epsilon=args.epsilon, recompute_bn=args.recompute_bn,
                            channel_threshold=args.channel_threshold).check()  # before TensorFlow loads
    from eps_resnet.prune import ExportVerificationFailed, export
    from eps_resnet.report import export_report_text
    from eps_resnet.plan import Plan
    try:
        report = export(args.logdir, args.out, request)
    except ExportVerificationFailed as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    import os
    plan = Plan.load(os.path.join(args.logdir, "plan.json"))
    reduced = Plan.load(os.path.join(report["out"], "plan.json"))
    print(export_report_text(report, plan, reduced))
    print("exported to %s: SavedModel in %d/, model.tflite%s, report.md, report.json, plan.json"
          % (report["out"], args.version, ", model_dynamic.tflite" if args.quantize else ""))
    return 0


def run():
    """The console script (pyproject.toml)."""
    guard.main_guard(main, interrupted="interrupted; nothing was exported")


if __name__ == "__main__":
    run()
