"""Train on two replicated towers (they fall back to the CPU here) and print, for every step, each tower's
gate decision of block res1.0 and the weight decay in force: ε is 0 in epoch 1 and 1e6 from then on; the weight
decay steps down x0.2 every 3 steps (the first step of epoch 2). The channel regulariser is on (each tower must
penalise its own copy of the kernels).

    python tests/programs/two_towers.py LOGDIR
        prints TOWERS [names] and SEEN [[epoch, gate0, gate1, weight decay], ...]
"""
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import eps_resnet  # noqa: E402,F401
from eps_resnet.recipes import DIGITS_DEMO  # noqa: E402
from eps_resnet.tfcompat import tfv1  # noqa: E402
from eps_resnet.tfgraph import find_shared_variable  # noqa: E402
from eps_resnet.training import train  # noqa: E402

from tensorpack.callbacks import Callback  # noqa: E402


class TowerGates(Callback):
    seen = []

    def _setup_graph(self):
        self.names = sorted(op.name + ":0" for op in self.graph.get_operations()
                            if op.name.startswith("tower") and op.name.endswith("res1.0/is_discarded"))
        self.fetches = self.names + [find_shared_variable("weight_decay", self.graph)]

    def _before_run(self, _):
        return tfv1.train.SessionRunArgs(fetches=self.fetches)

    def _after_run(self, _, values):
        self.seen.append([self.epoch_num] + [float(v) for v in values.results])


recipe = dataclasses.replace(DIGITS_DEMO, num_units=1, gpus=(0, 1), steps_per_epoch=3, max_epoch=2,
                             epsilon=1e6, epsilon_start_epoch=1, logdir=sys.argv[1], channel_penalty=1e-3,
                             weight_decay_every=3)
gates = TowerGates()
train(recipe, extra_callbacks=[gates])
print("TOWERS", json.dumps(gates.names))
print("SEEN", json.dumps(gates.seen))
