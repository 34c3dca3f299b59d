"""Start-up time of training against depth and towers, measured side by side in one run.

Each case is a fresh process that trains the bundled digits for 2 steps of batch 8 and validates once on 200
images, so its wall time is almost all start-up: building the training tower(s), the inference tower, the
session, and the first steps. Each case runs three times, interleaved with the others, and its fastest run
counts: these machines are shared, and the per-layer ratio rests on a few seconds' difference. Cases: ResNet-32
(n=5), ResNet-110 (n=18) and the 752-layer network (n=125) on one tower, the bottleneck ResNet-1001 (n=111, 333
units), and n=18 on two replicated towers (they fall back to the CPU on a machine without GPUs). Prints the times; the ratio n=125 / n=18 (target <= 4.5; 375 blocks are 6.9 times
54); the seconds each further block adds from n=5 to 18 and from n=18 to 125, whose ratio is 1 when start-up is
linear in depth; the seconds per further weight layer from ResNet-110 to ResNet-1001 against those from ResNet-32
to ResNet-110 (target <= 1.2); and 2 towers / 1 tower (target <= 2).

Then the cost of Grappler, which training switches off on machines without GPUs: n=18 start-up with it on, and
the steady-state time of 40 steps of batch 32 (ResNet-110, the third of three epochs) with it on and off.

    python bench/startup.py [--deep 125] [--shallow 18] [--repeat 3]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_case(n, towers, grappler="default", steady=False, bottleneck=False):
    """Wall time of one short training process (seconds), or with `steady` the last epoch's time."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.abspath(__file__), "--case", str(n), str(towers), os.path.join(tmp, "run"),
               grappler, "steady" if steady else "startup", "bottleneck" if bottleneck else "basic"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
        elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit("startup bench: the n=%d, %d-tower case failed:\n%s" % (n, towers, proc.stderr[-3000:]))
    if steady:
        epochs = re.findall(r"Epoch 3 \(global_step \d+\) finished, time:([\d.]+)", proc.stdout + proc.stderr)
        return float(epochs[-1])
    return elapsed


def train_case(n, towers, logdir, grappler, kind, unit="basic"):
    import dataclasses
    import eps_resnet  # noqa: F401
    from eps_resnet import training
    from eps_resnet.recipes import DIGITS_DEMO
    from tensorpack.dataflow import FixedSizeData
    if grappler == "on":  # what a machine with GPUs runs
        plain_creator = training.session_creator

        def with_grappler(recipe, ranks=None, plan=None):
            creator = plain_creator(recipe, ranks, plan)
            creator.config.graph_options.rewrite_options.disable_meta_optimizer = False
            return creator
        training.session_creator = with_grappler
    shape = dict(batch=8, steps_per_epoch=2, max_epoch=1) if kind == "startup" else \
        dict(batch=32, steps_per_epoch=40, max_epoch=3)
    recipe = dataclasses.replace(DIGITS_DEMO, num_units=n, gpus=tuple(range(towers)) if towers > 1 else (),
                                 logdir=logdir, bottleneck=unit == "bottleneck", **shape)
    batch_per_tower = recipe.batch // towers
    train_df, val_df, mean = training.build_data(recipe, training.build_plan(recipe), batch_per_tower)
    training.train(recipe, data=(train_df, FixedSizeData(val_df, 200 // batch_per_tower), mean))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shallow", type=int, default=18, help="blocks per group of the shallow case (default: 18)")
    p.add_argument("--tiny", type=int, default=5, help="blocks per group of the smallest case (default: 5)")
    p.add_argument("--deep", type=int, default=125, help="blocks per group of the deep case (default: 125)")
    p.add_argument("--bottleneck", type=int, default=111,
                   help="units per group of the bottleneck case (default: 111, ResNet-1001)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each start-up case; the fastest counts (default: 3)")
    p.add_argument("--case", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        return train_case(int(args.case[0]), int(args.case[1]), *args.case[2:])

    cases = ((args.tiny, 1), (args.shallow, 1), (args.deep, 1), (args.shallow, 2), ("b%d" % args.bottleneck, 1))
    runs = {case: [] for case in cases}
    for _ in range(args.repeat):
        for n, towers in cases:
            bottleneck = str(n).startswith("b")
            runs[n, towers].append(run_case(int(str(n).lstrip("b")), towers, bottleneck=bottleneck))
    times = {case: min(runs[case]) for case in cases}
    layers = {n: 9 * int(str(n)[1:]) + 2 if str(n).startswith("b") else 6 * n + 2 for n, _ in cases}
    for n, towers in cases:
        print("%-5s (%4d layers) %d tower(s): %6.1f s  (runs: %s)" % (
            "n=%s" % n, layers[n], towers, times[n, towers], ", ".join("%.1f" % t for t in runs[n, towers])),
            flush=True)
    depth_ratio = times[args.deep, 1] / times[args.shallow, 1]
    print("start-up n=%d / n=%d: %.2f  (%.1fx the blocks; target <= 4.5)"
          % (args.deep, args.shallow, depth_ratio, args.deep / args.shallow))
    # Linear start-up means every block costs the same, however deep the network: compare the marginal cost of
    # a block from the tiny to the shallow case with that from the shallow to the deep case.
    blocks = {n: 3 * n for n in (args.tiny, args.shallow, args.deep)}
    per_block_shallow = (times[args.shallow, 1] - times[args.tiny, 1]) / (blocks[args.shallow] - blocks[args.tiny])
    per_block_deep = (times[args.deep, 1] - times[args.shallow, 1]) / (blocks[args.deep] - blocks[args.shallow])
    fixed = times[args.shallow, 1] - blocks[args.shallow] * per_block_shallow
    print("seconds per block: %.3f from n=%d to n=%d, %.3f from n=%d to n=%d; deep / shallow %.2f (1.00: linear); "
          "cost of no block at all %.1f s" % (per_block_shallow, args.tiny, args.shallow, per_block_deep, args.shallow,
                                             args.deep, per_block_deep / per_block_shallow, fixed))
    big = "b%d" % args.bottleneck
    per_layer_basic = (times[args.shallow, 1] - times[args.tiny, 1]) / (layers[args.shallow] - layers[args.tiny])
    per_layer_bottleneck = (times[big, 1] - times[args.shallow, 1]) / (layers[big] - layers[args.shallow])
    print("seconds per weight layer: %.4f from ResNet-%d to ResNet-%d (basic), %.4f from ResNet-%d to the bottleneck "
          "ResNet-%d; ratio %.2f (target <= 1.2)"
          % (per_layer_basic, layers[args.tiny], layers[args.shallow], per_layer_bottleneck, layers[args.shallow],
             layers[big], per_layer_bottleneck / per_layer_basic))
    print("start-up 2 towers / 1 tower at n=%d: %.2f  (target <= 2)"
          % (args.shallow, times[args.shallow, 2] / times[args.shallow, 1]))

    with_grappler = run_case(args.shallow, 1, grappler="on")
    print("start-up n=%d with Grappler / without: %.2f  (%.1f s / %.1f s)"
          % (args.shallow, with_grappler / times[args.shallow, 1], with_grappler, times[args.shallow, 1]), flush=True)
    steady = {mode: run_case(args.shallow, 1, grappler=mode, steady=True) for mode in ("on", "default")}
    print("steady-state 40 steps at n=%d, with Grappler / without: %.2f  (%.2f s / %.2f s)"
          % (args.shallow, steady["on"] / steady["default"], steady["on"], steady["default"]))


if __name__ == "__main__":
    main()
