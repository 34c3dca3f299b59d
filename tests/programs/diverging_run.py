"""Train the tiny demo network with a learning rate of 1e30 from epoch 2 on, so that the loss diverges.

    python tests/programs/diverging_run.py LOGDIR
"""
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import eps_resnet  # noqa: E402,F401
from eps_resnet import cli, guard  # noqa: E402
from eps_resnet.recipes import DIGITS_DEMO  # noqa: E402

recipe = dataclasses.replace(DIGITS_DEMO, num_units=1, steps_per_epoch=4, max_epoch=3, logdir=sys.argv[1],
                             standard_lr=((0, 0.1), (1, 1e30)), adaptive_lr=False)
guard.main_guard(lambda: cli.run_training(recipe))
