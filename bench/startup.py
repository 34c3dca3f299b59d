"""Start-up time of training against depth and towers, measured side by side in one run.

Each case is a fresh process that trains the bundled digits for 2 steps of batch 8 and validates once, so
its wall time is almost all start-up: building the training tower(s), the inference tower, the session,
and the first steps. Cases: ResNet-110 (n=18) and the 752-layer network (n=125) on one tower, and n=18 on
two replicated towers (they fall back to the CPU on a machine without GPUs). Prints the times and the ratios
n=125 / n=18 (target <= 4.5; 375 blocks are 6.9 times 54) and 2 towers / 1 tower (target <= 2).

    python bench/startup.py [--deep 125] [--shallow 18]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_case(n, towers):
    """Wall time of one short training process (seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.abspath(__file__), "--case", str(n), str(towers), os.path.join(tmp, "run")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit("startup bench: the n=%d, %d-tower case failed:\n%s" % (n, towers, proc.stderr[-3000:]))
    return elapsed


def train_case(n, towers, logdir):
    import dataclasses
    import eps_resnet  # noqa: F401
    from eps_resnet.recipes import DIGITS_DEMO
    from eps_resnet.training import train
    recipe = dataclasses.replace(DIGITS_DEMO, num_units=n, batch=8, steps_per_epoch=2, max_epoch=1,
                                 gpus=tuple(range(towers)) if towers > 1 else (), logdir=logdir)
    train(recipe)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shallow", type=int, default=18, help="blocks per group of the shallow case (default: 18)")
    p.add_argument("--deep", type=int, default=125, help="blocks per group of the deep case (default: 125)")
    p.add_argument("--case", nargs=3, metavar=("N", "TOWERS", "LOGDIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        return train_case(int(args.case[0]), int(args.case[1]), args.case[2])

    times = {}
    for n, towers in ((args.shallow, 1), (args.deep, 1), (args.shallow, 2)):
        times[n, towers] = run_case(n, towers)
        print("n=%-4d (%4d layers) %d tower(s): %6.1f s" % (n, 6 * n + 2, towers, times[n, towers]), flush=True)
    depth_ratio = times[args.deep, 1] / times[args.shallow, 1]
    print("start-up n=%d / n=%d: %.2f  (%.1fx the blocks; target <= 4.5)"
          % (args.deep, args.shallow, depth_ratio, args.deep / args.shallow))
    print("start-up 2 towers / 1 tower at n=%d: %.2f  (target <= 2)"
          % (args.shallow, times[args.shallow, 2] / times[args.shallow, 1]))


if __name__ == "__main__":
    main()
