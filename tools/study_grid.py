#!/usr/bin/env python
"""`make study`: a small grid on the bundled digits, then `python -m eps_resnet.study` over it.

Depths 14, 20 and 32 (n = 2, 3, 5), each as a plain ResNet and as ε-ResNets with three ε values, every run with
the demo's settings (`train_cifar.py --demo`, listed in the README). About 20 minutes on 2 CPU cores. A run
that already finished is kept and not trained again, so an interrupted grid continues where it stopped
(an unfinished run is continued with --resume).

    python tools/study_grid.py [--runs study_runs] [--out docs/study]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from eps_resnet.guard import main_guard, run_stage  # noqa: E402
NUM_UNITS = (2, 3, 5)
EPSILONS = (None, 4.0, 6.0, 8.0)  # None: the plain ResNet


def finished(logdir):
    """True when the run's last validation is from its last epoch."""
    try:
        with open(os.path.join(logdir, "run.json")) as f:
            max_epoch = json.load(f)["recipe"]["max_epoch"]
        with open(os.path.join(logdir, "stats.json")) as f:
            return max(s.get("epoch_num", 0) for s in json.load(f)) >= max_epoch
    except (OSError, ValueError, KeyError):
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=os.path.join(ROOT, "study_runs"), help="where the training runs go")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "study"), help="where the study is written")
    args = p.parse_args()
    logdirs = []
    started = time.time()
    for n in NUM_UNITS:
        for eps in EPSILONS:
            logdir = os.path.join(args.runs, "digits-n%d-%s" % (n, "plain" if eps is None else "eps%g" % eps))
            logdirs.append(logdir)
            if finished(logdir):
                print("kept (finished): %s" % logdir, flush=True)
                continue
            cmd = [sys.executable, os.path.join(ROOT, "train_cifar.py"), "--demo", "-n", str(n), "--logdir", logdir]
            cmd += ["--plain"] if eps is None else ["-e", str(eps)]
            if os.path.isdir(logdir) and os.listdir(logdir):
                cmd.append("--resume")
            print("[%5.1f min] %s" % ((time.time() - started) / 60, " ".join(cmd[1:])), flush=True)
            if run_stage(cmd, cwd=ROOT, stdout=subprocess.DEVNULL):
                print("error: %s failed; see %s/log.log, then run the grid again (it continues)" % (logdir, logdir),
                      file=sys.stderr)
                return 1
    print("[%5.1f min] grid trained" % ((time.time() - started) / 60), flush=True)
    return run_stage([sys.executable, "-m", "eps_resnet.study"] + logdirs + ["--out", args.out], cwd=ROOT)


if __name__ == "__main__":
    main_guard(main, interrupted="interrupted; run the grid again to continue (finished runs are kept)")
