"""Where a training step's time goes: TensorFlow's step statistics of steps trained exactly as train_cifar.py
trains (synthetic images, --fake), summed by kind of op.

Prints the wall time of a traced step, the ops it ran, and per op type (and per part of the network: the
convolutions and their gradients, BatchNorm, the gates, the optimiser, summaries and statistics, the rest)
the time its ops ran, in ms per step. Ops of one step run on several threads at once, so the sum over ops can
exceed the wall time; the convolutions' share of the sum is what the rest of the step costs against them.

    python bench/profile_step.py [-n 5] [--batch 32] [--plain] [--steps 10] [--top 25]
"""
import argparse
import collections
import dataclasses
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eps_resnet  # noqa: E402,F401
from eps_resnet import training  # noqa: E402
from eps_resnet.recipes import CIFAR10  # noqa: E402
from eps_resnet.tfcompat import tfv1  # noqa: E402
from tensorpack import Callback  # noqa: E402

WARMUP_STEPS = 10
PARTS = (  # (part, pattern on "op type name"), the first match wins
    ("convolutions", r"Conv2D"),
    ("BatchNorm", r"FusedBatchNorm|/bn/"),
    ("ReLU", r"^Relu"),
    ("pooling, padding", r"AvgPool|^Pad"),
    ("gates", r"gate_constants|/response_max|batch_response_max|/keep|is_discarded|IdentityN|MulNoNan|"
              r"gate_statistics"),
    ("optimiser", r"ApplyMomentum|Momentum"),
    ("weight decay", r"l2_sum|wd_cost|L2Loss|regularize"),
    ("summaries, moving averages", r"Summary|EMA|ema|moving|summary"),
    ("losses, heads", r"cross_entropy|incorrect|train_error|logits|linear|gap|bnlast|InTopK"),
)


class StepTracer(Callback):
    """After the warm-up, trace `steps` steps; then stop training."""

    def __init__(self, steps):
        self.steps, self.seen, self.stats, self.walls = steps, 0, [], []

    def _before_run(self, _):
        self.start = time.perf_counter()
        if self.seen >= WARMUP_STEPS:
            return tfv1.train.SessionRunArgs(fetches=[], options=tfv1.RunOptions(
                trace_level=tfv1.RunOptions.FULL_TRACE))
        return None

    def _after_run(self, _, values):
        self.seen += 1
        if self.seen > WARMUP_STEPS:
            self.walls.append(time.perf_counter() - self.start)
            self.stats.append(values.run_metadata.step_stats)
        if len(self.stats) == self.steps:
            report(self.stats, self.walls)
            sys.stdout.flush()
            os._exit(0)


def report(all_stats, walls):
    by_type, by_part, ops = collections.Counter(), collections.Counter(), 0
    for stats in all_stats:
        for device in stats.dev_stats:
            for node in device.node_stats:
                name, _, rest = node.node_name.partition(":")
                if name in ("_SOURCE", "_SINK"):
                    continue
                op_type = node.timeline_label.split("=")[-1].split("(")[0].strip() if "=" in node.timeline_label \
                    else name
                op_type = op_type.split()[0] if op_type else "?"
                ms = node.all_end_rel_micros / 1e3
                by_type[op_type] += ms
                key = "%s %s" % (op_type, name)
                by_part[next((part for part, pattern in PARTS if re.search(pattern, key)), "the rest")] += ms
                ops += 1
    steps = len(all_stats)
    total = sum(by_type.values())
    print("traced %d steps: wall %.1f ms per step (traced; untraced steps are a little faster), %d ops per step, "
          "%.1f ms op time per step" % (steps, 1e3 * sorted(walls)[len(walls) // 2], ops // steps, total / steps))
    print("\nby part of the step (ms per step, share of op time):")
    for part, ms in by_part.most_common():
        print("  %-28s %8.2f  %5.1f%%" % (part, ms / steps, 100 * ms / total))
    print("\nby op type (top %d):" % ARGS.top)
    for op_type, ms in by_type.most_common(ARGS.top):
        print("  %-28s %8.2f  %5.1f%%" % (op_type, ms / steps, 100 * ms / total))


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=5, help="blocks per group (default: %(default)s, ResNet-32)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--plain", action="store_true", help="the plain ResNet (default: gated, ε 2.5)")
    p.add_argument("--steps", type=int, default=10, help="steps traced (default: %(default)s)")
    p.add_argument("--top", type=int, default=25, help="op types listed (default: %(default)s)")
    p.add_argument("--grappler", default=None, metavar="PASSES",
                   help="run these Grappler passes (comma-separated, e.g. remapper,arithmetic), to compare with "
                        "training's session (none on a CPU)")
    ARGS = p.parse_args()
    if ARGS.grappler:
        training_creator = training.session_creator

        def with_passes(recipe, ranks=None, plan=None):
            creator = training_creator(recipe, ranks, plan)
            options = creator.config.graph_options.rewrite_options
            options.disable_meta_optimizer = False
            options.optimizers.extend(ARGS.grappler.split(","))
            return creator
        training.session_creator = with_passes
    with tempfile.TemporaryDirectory() as tmp:
        recipe = dataclasses.replace(CIFAR10, num_units=ARGS.n, batch=ARGS.batch, epsilon=None if ARGS.plain else 2.5,
                                     fake_data=True, steps_per_epoch=10 ** 9, max_epoch=1,
                                     logdir=os.path.join(tmp, "run"), workers=0, seed=0)
        training.train(recipe, extra_callbacks=[StepTracer(ARGS.steps)])


if __name__ == "__main__":
    main()
