"""Measured CPU speedup of an exported reduced network against the full gated graph, next to the ideal.

Builds a CIFAR ε-ResNet (n=18, ResNet-110, by default) with random weights, saves a checkpoint, closes a
given fraction of its blocks (spread evenly over the depth), exports the reduced SavedModel with the
project's export code, and times both at batch 64 in this process, rounds interleaved. Prints
measured speedup / ideal FLOPs speedup (target >= 0.9).

    python bench/reduced_speedup.py [--n 18] [--fraction 0.5] [--batch 64] [--rounds 10]
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import eps_resnet  # noqa: E402,F401
import numpy as np  # noqa: E402

from eps_resnet.inference import build_inference_graph, interleaved_times  # noqa: E402
from eps_resnet.plan import cifar_plan  # noqa: E402
from eps_resnet.prune import quiet_layer_logs, write_saved_model  # noqa: E402
from eps_resnet.tfcompat import tf, tfv1  # noqa: E402


def export_session(export_dir):
    g = tf.Graph()
    sess = tfv1.Session(graph=g)
    with g.as_default():
        meta = tfv1.saved_model.loader.load(sess, [tfv1.saved_model.SERVING], export_dir)
    sig = meta.signature_def["serving_default"]
    return sess, g.get_tensor_by_name(sig.inputs["image"].name), g.get_tensor_by_name(sig.outputs["logits"].name)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=18, help="blocks per group (default: %(default)s)")
    p.add_argument("--fraction", type=float, default=0.5, help="fraction of blocks closed (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default: %(default)s)")
    args = p.parse_args()
    quiet_layer_logs()
    plan = cifar_plan(args.n)
    count = int(round(args.fraction * len(plan.blocks)))
    closed = [plan.blocks[int(i)].name for i in np.linspace(0, len(plan.blocks) - 1, count)] if count else []
    reduced = plan.without(closed)
    work = tempfile.mkdtemp(prefix="eps-resnet-speedup-")
    try:
        gated = build_inference_graph(plan, epsilon=2.5)
        gsess = gated.session()  # random weights
        with gated.graph.as_default():
            ckpt = tfv1.train.Saver().save(gsess, os.path.join(work, "model"))
        export_dir = os.path.join(work, "export")
        write_saved_model(reduced, ckpt, export_dir)
        esess, ein, eout = export_session(export_dir)
        x = np.random.RandomState(0).randint(0, 256, (args.batch, 32, 32, 3)).astype(np.uint8)
        times = interleaved_times({"gated": lambda: gsess.run(gated.logits, {gated.image: x}),
                                   "export": lambda: esess.run(eout, {ein: x})}, rounds=args.rounds)
        ratios = np.array(times["gated"]) / np.array(times["export"])
        measured, ideal = float(np.median(ratios)), plan.flops / reduced.flops
        print("ResNet-%d, %d of %d blocks closed, batch %d, %d rounds" % (plan.full_depth, count, len(plan.blocks),
                                                                         args.batch, args.rounds))
        print("gated full graph: %.1f ms   reduced export: %.1f ms  (medians)"
              % (np.median(times["gated"]) * 1e3, np.median(times["export"]) * 1e3))
        print("speedup measured %.2fx, ideal from FLOPs %.2fx, measured / ideal %.2f (target >= 0.9)"
              % (measured, ideal, measured / ideal))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
