"""What monitoring costs: the reduced network's validation beside the gated one's, and the TensorBoard budget.

1. Validation time of the gated network alone against the gated and the reduced network together (what training
   runs each epoch: EpsResNet.validation_tower_func), interleaved rounds over the same batches, on ResNet-32 and
   ResNet-110 with none, half and all but one of the blocks removed (a removed block's branch is not computed).
2. A one-epoch gated run (2 steps) at n=125 (752 layers) with the default histogram budget and with every block's
   kernels: scalar tags per block, histogram tags, bytes of histograms and of all summaries per epoch (read
   back from the events file), and whether the block tags sort in network order.

    python bench/monitoring.py [--rounds 5] [--deep 125] [--skip-budget]
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eps_resnet  # noqa: E402,F401


def validation_cost(n, removed_fraction, rounds, images=360, batch=32):
    """(seconds gated alone, seconds gated + reduced) per pass over `images`, median of interleaved rounds."""
    from eps_resnet.inference import interleaved_times
    from eps_resnet.model import EpsResNet
    from eps_resnet.network import reduced_network_keep
    from eps_resnet.recipes import CIFAR10
    from eps_resnet.plan import cifar_plan
    from eps_resnet.tfcompat import tf, tfv1
    from tensorpack.tfutils.tower import PredictTowerContext
    plan = cifar_plan(n, image_size=16)
    names = plan.block_names_gated
    removed = set(names[len(names) - 1 - i] for i in range(int(round(removed_fraction * (len(names) - 1)))))
    rng = np.random.RandomState(0)
    batches = [rng.randint(0, 256, (batch, 16, 16, 3)).astype(np.uint8) for _ in range(images // batch)]
    labels = np.zeros(batch, np.int32)
    with tf.Graph().as_default():
        model = EpsResNet(plan, CIFAR10)
        image = tfv1.placeholder(tf.uint8, [None, 16, 16, 3], name="image")
        label = tfv1.placeholder(tf.int32, [None], name="label")
        with PredictTowerContext("InferenceTower"):
            model.validation_tower_func()(image, label)
        gated = ["InferenceTower/incorrect_vector:0"]
        both = gated + ["InferenceTower/reduced/incorrect_vector:0"]
        config = tfv1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=os.cpu_count())
        config.graph_options.rewrite_options.disable_meta_optimizer = True  # as training runs on a CPU
        sess = tfv1.Session(config=config)
        sess.run([tfv1.global_variables_initializer(), tfv1.local_variables_initializer()])
        reduced_network_keep(len(names)).load([nm not in removed for nm in names], sess)

        def run(fetches):
            return lambda: [sess.run(fetches, {image: b, label: labels}) for b in batches]
        times = interleaved_times({"gated": run(gated), "both": run(both)}, rounds=rounds, warmup=1)
        sess.close()
    return float(np.median(times["gated"])), float(np.median(times["both"])), len(removed), len(names)


def budget_case(n, histogram_blocks, logdir):
    """Train one epoch of 2 steps in a child process; returns the events file's path."""
    code = ("import sys; sys.path.insert(0, %r); import dataclasses, eps_resnet; from eps_resnet.training import train; "
            "from eps_resnet.recipes import DIGITS_DEMO; train(dataclasses.replace(DIGITS_DEMO, num_units=%d, batch=8, "
            "steps_per_epoch=2, max_epoch=1, logdir=%r, histogram_blocks=%d))" % (ROOT, n, logdir, histogram_blocks))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("monitoring bench: the n=%d run failed:\n%s" % (n, proc.stderr[-3000:]))
    return glob.glob(os.path.join(logdir, "events.out.tfevents.*"))[0]


def read_events(path):
    """{"scalar": {tag: bytes}, "histo": {...}, "image": {...}} of the summary values in an events file."""
    from tensorflow.core.util import event_pb2
    from tensorflow.python.lib.io import tf_record
    kinds = {"scalar": {}, "histo": {}, "image": {}}
    for raw in tf_record.tf_record_iterator(path):
        event = event_pb2.Event.FromString(raw)
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            kind = "scalar" if kind in ("simple_value", "tensor") else kind
            if kind in kinds:
                kinds[kind][value.tag] = kinds[kind].get(value.tag, 0) + value.ByteSize()
    return kinds


def budget(n):
    from eps_resnet.plan import cifar_plan
    plan = cifar_plan(n, image_size=16)
    blocks = len(plan.blocks)
    print("\n== TensorBoard budget of one epoch at n=%d (%d blocks, %d layers)" % (n, blocks, plan.full_depth))
    with tempfile.TemporaryDirectory() as tmp:
        for label, count in (("default budget", plan.evenly_spaced_blocks(16).__len__()), ("every block", blocks)):
            kinds = read_events(budget_case(n, count, os.path.join(tmp, "h%d" % count)))
            per_block = [t for t in kinds["scalar"] if re.match(r"^(%s)/" % "|".join(plan.PER_BLOCK_SCALARS), t)]
            in_order = [t.split("/", 1)[1] for t in sorted(per_block) if t.startswith("is_discarded/")]
            expected = [plan.block_tags("x")[b].split("/", 1)[1] for b in plan.block_names]
            print("%-15s --histogram-blocks %3d: %d scalar tags (%.0f per block; %d others), %d histogram tags, "
                  "histograms %.1f kB an epoch (%.0f MB over 1000 epochs), all summaries %.1f kB an epoch; "
                  "block tags in network order: %s"
                  % (label, count, len(kinds["scalar"]), len(per_block) / blocks, len(kinds["scalar"]) - len(per_block),
                     len(kinds["histo"]), sum(kinds["histo"].values()) / 1e3, sum(kinds["histo"].values()) / 1e3,
                     sum(sum(k.values()) for k in kinds.values()) / 1e3, in_order == expected))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--deep", type=int, default=125)
    p.add_argument("--skip-budget", action="store_true")
    args = p.parse_args()
    print("== validation pass over 360 images, batch 32: gated network alone vs gated + reduced (median of %d "
          "interleaved rounds)" % args.rounds)
    for n in (5, 18):
        for fraction in (0.0, 0.5, 1.0):
            alone, both, removed, total = validation_cost(n, fraction, args.rounds)
            print("ResNet-%d, %3d of %d blocks removed: %.3f s alone, %.3f s with the reduced network (x%.2f)"
                  % (6 * n + 2, removed, total, alone, both, both / alone))
    if not args.skip_budget:
        budget(args.deep)


if __name__ == "__main__":
    main()
