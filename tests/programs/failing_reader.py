"""Train the tiny demo network on data whose reader raises after a few images, as a disk or a decoder can.

    python tests/programs/failing_reader.py LOGDIR WORKERS

The failure is injected below our pipeline (the array reader), so the real dataflow, its workers and the
trainer's input queue meet it as they would meet a real one.
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import eps_resnet  # noqa: E402,F401
from eps_resnet import cli, data, guard  # noqa: E402
from eps_resnet.recipes import DIGITS_DEMO  # noqa: E402

reader = data.ArrayImages.__iter__


def failing_iter(self):
    for n, dp in enumerate(reader(self)):
        if self.shuffle and n == 200:  # the training flow, after a few batches
            raise OSError(5, "Input/output error", "shard-0007.bin")
        yield dp


data.ArrayImages.__iter__ = failing_iter
recipe = dataclasses.replace(DIGITS_DEMO, num_units=1, steps_per_epoch=4, max_epoch=1000, logdir=sys.argv[1],
                             workers=int(sys.argv[2]))
guard.main_guard(lambda: cli.run_training(recipe))
