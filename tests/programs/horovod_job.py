"""A tiny ε-ResNet trained by `horovodrun -np 2` for tests/test_horovod.py.

Each rank works in its own folder <workdir>/rank<R> (as on separate machines) with the relative log
directory train_log/run, so the test can see which rank wrote what. Rank 1 trains on the bundled digits
throughout. Rank 0 trains on them for the first epoch, then on all-zero images: with a zero mean image
and BatchNorm's offsets still at their initial 0 (the standard learning rate is 0), its input is exactly
0, every residual response is 0, and all of its gates close. Alone, rank 0's data would reset the
learning rate at epoch 2 (to the fast schedule: 0.1, then 0.01 after one epoch, 0.001 after three) and
rank 1's would not; the ranks must agree, or their weights part.
At the end each rank saves its trainable weights to <workdir>/weights/rank<R>.npz.
"""
import argparse
import dataclasses
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import eps_resnet  # noqa: E402,F401
from eps_resnet import cli, guard  # noqa: E402
from eps_resnet.data import build_dataflow, dataset_info  # noqa: E402
from eps_resnet.distributed import env_rank  # noqa: E402
from eps_resnet.recipes import DIGITS_DEMO  # noqa: E402
from eps_resnet.tfcompat import tfv1  # noqa: E402
from eps_resnet.training import train  # noqa: E402

from tensorpack.callbacks import Callback  # noqa: E402
from tensorpack.dataflow import DataFlow  # noqa: E402

STEPS_PER_EPOCH = 20
BATCH = 32


class ZerosAfter(DataFlow):
    """The batches of `inner` for the first `real_batches`, then batches of all-zero images."""

    def __init__(self, inner, real_batches):
        self.inner = inner
        self.real_batches = real_batches

    def reset_state(self):
        self.inner.reset_state()

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        served = 0
        while True:
            for images, labels in self.inner:
                if served >= self.real_batches:
                    images = np.zeros_like(images)
                served += 1
                yield [images, labels]


class SaveWeights(Callback):
    _chief_only = False

    def __init__(self, path):
        self.path = path

    def _after_train(self):
        variables = {v.op.name: v for v in tfv1.trainable_variables()}
        values = self.trainer.sess.run(variables)
        np.savez(self.path, **{name.replace("/", "|"): value for name, value in values.items()})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--max-epoch", type=int, default=4)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    rank = env_rank()
    home = os.path.join(args.workdir, "rank%d" % rank)
    os.makedirs(home, exist_ok=True)
    os.chdir(home)
    weights = os.path.join(args.workdir, "weights")
    os.makedirs(weights, exist_ok=True)

    recipe = dataclasses.replace(
        DIGITS_DEMO, num_units=2, epsilon=0.5, epsilon_start_epoch=0, batch=BATCH, steps_per_epoch=STEPS_PER_EPOCH,
        max_epoch=args.max_epoch, standard_lr=((0, 0.0),), fast_lr=((0, 0.1), (1, 0.01), (3, 0.001)),
        adaptive_k=1, adaptive_threshold=1.0, logdir=os.path.join("train_log", "run"), trainer="horovod",
        resume=args.resume)
    digits = build_dataflow("digits", "train", BATCH)
    data = ZerosAfter(digits, STEPS_PER_EPOCH) if rank == 0 else digits
    size = dataset_info("digits").image_size
    mean = np.zeros((size, size, 3), np.float32)

    def run():
        train(recipe, data=(data, None, mean),
              extra_callbacks=[SaveWeights(os.path.join(weights, "rank%d.npz" % rank))])
        return 0
    guard.main_guard(run)


if __name__ == "__main__":
    main()
