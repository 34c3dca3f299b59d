#!/usr/bin/env python
"""`make demo`: the paper's claim on the bundled handwritten digits, in a few minutes on a CPU.

Trains a plain pre-activation ResNet-32 and an ε-ResNet-32 with the same settings apart from the gates (same
network, steps, seed and learning-rate schedule; `train_cifar.py --demo`, the values are listed in the README),
removes the blocks the ε-ResNet discarded, exports the reduced network with BatchNorm statistics re-estimated on
training images (verified against that network) with the plain network's error on the same held-out images (its
statistics re-estimated alike), draws the figures and checks the claim.

Each run gets a new directory under demo_runs/ (earlier runs are never touched):
    demo_runs/<time>/plain    the plain ResNet's training run
    demo_runs/<time>/eps      the ε-ResNet's training run (checkpoints, TensorBoard, discards.jsonl, ...)
    demo_runs/<time>/export   the reduced SavedModel with report.md, report.json, plan.json, figures/
"""
import argparse
import json
import os
import subprocess
import sys
import time

from eps_resnet import UserError
from eps_resnet.guard import main_guard, run_stage, start_stage

ROOT = os.path.dirname(os.path.abspath(__file__))
# The export re-estimates BatchNorm statistics for the reduced network (and the baseline) on 20 batches of 64
# training images, about one pass over the digits (README, "The demo")
RECOMPUTE_BN_BATCHES = 20


def step(title, args):
    print("\n== %s" % title, flush=True)
    return run_stage([sys.executable] + args, cwd=ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="a new directory for the runs and the export (default: demo_runs/<time>)")
    p.add_argument("-e", "--epsilon", metavar="EPS|auto", default=None,
                   help="the ε-ResNet's ε (default: the demo recipe's); auto: chosen when the warm-up ends "
                        "(train_cifar.py -e auto)")
    p.add_argument("--seed", type=int, default=None, help="seed of both runs (default: the demo recipe's)")
    args = p.parse_args()
    shared = ["--seed", str(args.seed)] if args.seed is not None else []
    gates = ["-e", args.epsilon] if args.epsilon is not None else []
    if args.out is not None and not args.out.strip():
        raise UserError("--out is empty; pass a new directory, or leave the flag out")
    run_dir = args.out if args.out is not None else os.path.join(ROOT, "demo_runs", time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(run_dir):
        raise UserError("%s already exists; the demo writes a new directory: choose another --out" % run_dir)
    plain, gated, export = (os.path.join(run_dir, name) for name in ("plain", "eps", "export"))
    os.makedirs(run_dir)
    started = time.time()
    train = os.path.join(ROOT, "train_cifar.py")
    # The two runs train side by side: at the demo's small batches one run keeps about 1.3 of 2 cores busy, and
    # together they took 216 s where one after the other took 270-300 s (same results: each run is deterministic).
    console = os.path.join(run_dir, "plain-console.txt")
    print("\n== 1/4 training the plain ResNet-32 on the bundled digits, in the background (log: %s)" % plain,
          flush=True)
    with open(console, "w") as out:
        background = start_stage([sys.executable, train, "--demo", "--plain", "--logdir", plain] + shared, cwd=ROOT,
                                 stdout=out, stderr=subprocess.STDOUT)
    with background:
        if step("2/4 training the ε-ResNet-32, the same settings with gates (log: %s)" % gated,
                [train, "--demo", "--logdir", gated] + shared + gates):
            return 1
        print("\n== waiting for the plain run", flush=True)
        if background.wait():
            with open(console) as f:
                print(f.read()[-3000:], file=sys.stderr)
            return 1
    trained = time.time()
    if step("3/4 discarding blocks and exporting the reduced network to %s" % export,
            [os.path.join(ROOT, "prune_export.py"), gated, "--out", export, "--baseline", plain, "--quantize", "dynamic",
             "--recompute-bn", str(RECOMPUTE_BN_BATCHES)]):
        return 1
    if step("4/4 figures (paper Figs. 1, 5, 9, 10, the gates per epoch, responses and error curves)",
            ["-m", "eps_resnet.figures", gated, "--out", os.path.join(export, "figures"), "--baseline", plain,
             "--export", export]):
        return 1

    from eps_resnet.figures import RunRecords
    from eps_resnet.report import claim_checks, comparison_line
    with open(os.path.join(export, "report.json")) as f:
        report = json.load(f)
    collapse = RunRecords.load(gated).collapse()
    print("\n== the paper's claim on this run")
    print("weight collapse, kernel norm at the end / when the gate closed (epoch): " +
          ", ".join("%s %.2f (%d)" % (c["block"], c["ratio"], c["closed_epoch"]) for c in collapse))
    checks = claim_checks(report, collapse)
    for text, holds in checks:
        print("%s %s" % ("[x]" if holds else "[ ] NOT MET:", text))
    print("\ntraining %.1f minutes, in all %.1f minutes: %s" % ((trained - started) / 60, (time.time() - started) / 60,
                                                              run_dir))
    print(comparison_line(report))
    return 0


if __name__ == "__main__":
    main_guard(main, interrupted="interrupted; the demo's runs so far stay in their folder (a new demo starts afresh)")
