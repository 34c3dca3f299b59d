"""Train-step time of the gated ε-ResNet against the plain pre-activation ResNet, side by side.

CIFAR ResNet-32 (n=5) by default, batch 32, NHWC on CPU, in the session config training uses (every core;
Grappler off on a machine without GPUs). The graphs live in one process; rounds of steps alternate between them
so machine noise hits them alike. Prints the median step time of each and the ratio gated / plain (target:
<= 1.02) for the gate as training runs it on a CPU (Switch/Merge sum); and, for reference, the gate's arithmetic
sum (what GPUs and XLA run) and the released code's shortcut + T·F with TensorFlow's own gradient.
bench/peers.py measures the same ratio on separate processes that train as train_cifar.py does.

    python bench/gate_overhead.py [--n 5] [--batch 32] [--rounds 30] [--steps 2]
"""
import argparse
import contextlib
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import eps_resnet  # noqa: E402,F401
import numpy as np  # noqa: E402

from eps_resnet import gate  # noqa: E402
from eps_resnet.gate import average_gate_statistics  # noqa: E402
from eps_resnet.inference import interleaved_times  # noqa: E402
from eps_resnet.model import EpsResNet  # noqa: E402
from eps_resnet.plan import cifar_plan  # noqa: E402
from eps_resnet.recipes import CIFAR10  # noqa: E402
from eps_resnet.tfcompat import tf, tfv1  # noqa: E402
from tensorpack.tfutils.tower import TowerContext  # noqa: E402


def training_session_config(plan, batch):
    """The session config training uses for this network and batch (threads; without GPUs: Grappler off)."""
    from eps_resnet.training import session_creator
    creator = session_creator(dataclasses.replace(CIFAR10, batch=batch), plan=plan)
    creator.config.intra_op_parallelism_threads = creator.threads
    creator.config.inter_op_parallelism_threads = creator.ops_at_once
    return creator.config


@contextlib.contextmanager
def released_sum():
    """Build gates whose sum is the released code's shortcut + T·F (TensorFlow's own gradient), for reference:
    the cost of the method itself, before our exactness when shut and our hand-written gradient."""
    ours = gate.gated_sum
    gate.gated_sum = lambda shortcut, residual, keep, branch_on=None: shortcut + keep * residual
    try:
        yield
    finally:
        gate.gated_sum = ours


def make_trainer(plan, epsilon, batch, data_format, released=False, branch=True):
    """A session and a train op for one model; the batch is a constant in the graph (no feed cost)."""
    graph = tf.Graph()
    with graph.as_default(), (released_sum() if released else contextlib.nullcontext()):
        rng = np.random.RandomState(0)
        image = tf.constant(rng.randint(0, 256, (batch, 32, 32, 3)).astype(np.uint8))
        label = tf.constant(rng.randint(0, plan.num_classes, batch).astype(np.int32))
        model = EpsResNet(plan, dataclasses.replace(CIFAR10, epsilon=epsilon), on_gpu=data_format == "NCHW")
        model.branching_gates = branch
        with TowerContext("", is_training=True):
            cost = model.build_graph(image, label)
        if epsilon is not None:
            average_gate_statistics(plan)  # as the GateAgreement callback adds in training
        step = tfv1.train.get_or_create_global_step()
        train_op = model.optimizer().minimize(cost, global_step=step)
        # the moving-summary updates are part of every training step in tensorpack
        ema = tfv1.get_collection("MOVING_SUMMARY_OPS")  # tensors whose evaluation updates the averages
        op = tf.group(train_op, *ema)
        sess = tfv1.Session(graph=graph, config=training_session_config(plan, batch))
        sess.run([tfv1.global_variables_initializer(), tfv1.local_variables_initializer()])
    return sess, op


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5, help="blocks per group (default: %(default)s, ResNet-32)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=30, help="alternating rounds (default: %(default)s)")
    p.add_argument("--steps", type=int, default=2, help="steps per round (default: %(default)s)")
    p.add_argument("--epsilon", type=float, default=2.5, help="ε of the gated model (default: %(default)s)")
    p.add_argument("--data-format", default="NHWC", choices=["NHWC", "NCHW"])
    args = p.parse_args()

    plan = cifar_plan(args.n)
    runs = {"plain": make_trainer(plan, None, args.batch, args.data_format),
            "gated": make_trainer(plan, args.epsilon, args.batch, args.data_format),
            "arithmetic": make_trainer(plan, args.epsilon, args.batch, args.data_format, branch=False),
            "released": make_trainer(plan, args.epsilon, args.batch, args.data_format, released=True, branch=False)}
    times = interleaved_times({name: (lambda sess=sess, op=op: sess.run(op)) for name, (sess, op) in runs.items()},
                              rounds=args.rounds, repeat=args.steps)
    # Each round times both models back to back, so the per-round ratio cancels slow drifts of the
    # shared machine; the median of those ratios is the figure, the quartiles show the noise.
    print("ResNet-%d (n=%d), batch %d, %s, %d rounds x %d steps"
          % (plan.depth, args.n, args.batch, args.data_format, args.rounds, args.steps))
    print("median step: plain %.1f ms, gated %.1f ms, arithmetic sum %.1f ms, released sum %.1f ms"
          % tuple(np.median(times[k]) * 1e3 for k in ("plain", "gated", "arithmetic", "released")))
    for name, note in (("gated", "target <= 1.02"), ("arithmetic", "the gate's sum on GPUs and under XLA"),
                       ("released", "the released code's sum, for reference")):
        q1, med, q3 = np.percentile(np.array(times[name]) / np.array(times["plain"]), [25, 50, 75])
        print("ratio %s / plain: %.3f  (quartiles %.3f-%.3f; %s)" % (name, med, q1, q3, note))

if __name__ == "__main__":
    main()
