#!/usr/bin/env python
"""`make demo`: train an ε-ResNet on the bundled handwritten digits, discard blocks, export the reduced
SavedModel, draw the figures and print the report.

Each run gets a new directory under demo_runs/ (earlier runs are never touched):
    demo_runs/<time>/train_log   the training run (checkpoints, TensorBoard, discards.jsonl, ...)
    demo_runs/<time>/export      the reduced SavedModel with report.md, report.json, plan.json, figures/
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))


def step(title, args):
    print("\n== %s" % title, flush=True)
    return subprocess.call([sys.executable] + args, cwd=ROOT)


def main():
    run_dir = os.path.join(ROOT, "demo_runs", time.strftime("%Y%m%d-%H%M%S"))
    logdir, export = os.path.join(run_dir, "train_log"), os.path.join(run_dir, "export")
    os.makedirs(run_dir)
    started = time.time()
    if step("training an ε-ResNet on the bundled digits (log: %s)" % logdir,
            [os.path.join(ROOT, "train_cifar.py"), "--demo", "--logdir", logdir]):
        return 1
    if step("discarding blocks and exporting the reduced network to %s" % export,
            [os.path.join(ROOT, "prune_export.py"), logdir, "--out", export]):
        return 1
    if step("figures (paper Figs. 1, 5, 9, 10 and error curves)",
            ["-m", "eps_resnet.figures", logdir, "--out", os.path.join(export, "figures")]):
        return 1
    print("\ndone in %.1f minutes: %s" % ((time.time() - started) / 60, run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
