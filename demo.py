#!/usr/bin/env python
"""`make demo`: train an ε-ResNet on the bundled handwritten digits, then report what it discarded.

Each run gets a new directory under demo_runs/ (earlier runs are never touched).
"""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))


def main():
    run_dir = os.path.join(ROOT, "demo_runs", time.strftime("%Y%m%d-%H%M%S"))
    logdir = os.path.join(run_dir, "train_log")
    os.makedirs(run_dir)
    print("== training an ε-ResNet on the bundled digits (log: %s)" % logdir, flush=True)
    code = subprocess.call([sys.executable, os.path.join(ROOT, "train_cifar.py"), "--demo", "--logdir", logdir])
    if code != 0:
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
