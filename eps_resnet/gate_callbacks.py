"""The ε-ResNet method's part of training (methods.BlockGates): the gates' statistics agreed over towers and
ranks at each epoch's end, ε set for the next epoch (a fixed value after a warm-up, or chosen at the warm-up's end
with --epsilon auto), and the log's table of discarded blocks.
"""
import json
import os
from typing import Dict

from tabulate import tabulate

from . import UserError
from .fileio import disk_error_hint
from .gate import average_gate_statistics, unpack_gate_statistics
from .network import REDUCED_KEEP
from .plan import Plan
from .rundir import counts_as_discarded
from .tfcompat import tfv1
from .tfgraph import find_shared_variable

from tensorpack.callbacks import Callback
from tensorpack.utils import logger


class GateAgreement(Callback):
    """At each epoch end, the moving averages of the gate statistics that every later decision reads.

    It builds the statistics' moving average over this process's towers (gate.average_gate_statistics): with
    several GPUs each tower sees another part of the batch, and a decision taken on tower 0 alone would see 1/8
    of it on 8 GPUs. In a Horovod run each rank trains on other batches, so its gates and its discarded_cnt
    differ: the averages are allreduced (mean over ranks) here, once, so that the adaptive learning rate and the
    discard tracker decide the same on every rank. Place it before the learning-rate setter and the tracker.
    It also sets the flags of the reduced network that validation runs next (EpsResNet.validation_tower_func),
    so it must come before the inference runner. Attributes after each epoch: `stats` {block: (is_discarded, batch max |F|)}, `discarded_cnt`, and
    `local_discarded_cnt` (this rank's own, for the log).
    """
    _chief_only = False  # every rank must take part in the allreduce

    def __init__(self, plan, ranks=None):
        self.plan = plan
        self.names = plan.block_names_gated
        self.ranks = ranks
        self.stats, self.discarded_cnt, self.local_discarded_cnt = {}, None, None

    def _setup_graph(self):
        local = average_gate_statistics(self.plan)  # over this process's towers (one per GPU)
        agreed = local
        if self.ranks is not None and self.ranks.size > 1:
            hvd = self.ranks.hvd
            agreed = hvd.allreduce(local, op=hvd.Average, name="gate_statistics_agreed")
        self._fetch = [local, agreed]

    def _before_train(self):
        found = self.graph.get_collection(REDUCED_KEEP)  # the validation tower's, built after us, on rank 0 only
        self._reduced_keep = found[0] if found else None

    def _trigger_epoch(self):
        local, agreed = self.trainer.sess.run(self._fetch)
        self.stats = unpack_gate_statistics(self.names, agreed)
        self.discarded_cnt = float(sum(flag for flag, _ in self.stats.values()))
        self.local_discarded_cnt = float(sum(flag for flag, _ in unpack_gate_statistics(self.names, local).values()))
        if self._reduced_keep is not None:  # validation of the reduced network, next (EpsResNet.validation_tower_func)
            self._reduced_keep.load([not counts_as_discarded(self.stats[n][0]) for n in self.names], self.trainer.sess)


class AutoEpsilon(Callback):
    """--epsilon auto: ε stays 0 (every gate open) through the warm-up; at the start of the first epoch after it,
    ε is chosen from the warm-up's last checkpoint on the held-out training images (auto_epsilon), recorded in
    epsilon.json, and kept for the rest of the run. Rank 0 chooses; under Horovod every rank gets its choice."""
    _chief_only = False

    def __init__(self, recipe, plan, logdir, ranks=None):
        self.recipe, self.plan, self.logdir, self.ranks = recipe, plan, logdir, ranks
        self.start = recipe.epsilon_start_epoch
        self.chosen = None

    def _setup_graph(self):
        import tensorflow as tf
        self._value = tfv1.placeholder(tf.float32, [], name="auto_epsilon_value")
        self._assign = find_shared_variable("epsilon", self.graph).assign(self._value)

    def _on_rank_0(self, step):
        """step() on rank 0, its result on every rank."""
        if self.ranks is None:
            return step()
        return self.ranks.agree(lambda: (None, step() if self.ranks.is_chief else None))[1]

    def _before_train(self):
        from .auto_epsilon import read_choice
        choice = self._on_rank_0(lambda: read_choice(self.logdir))
        if self.epoch_num < self.start:
            return  # the choice is still to come (a file left by a run rolled back to the warm-up is replaced)
        if choice is not None:
            self.chosen = float(choice["epsilon"])
        elif self.epoch_num == self.start:
            return  # stopped between the warm-up's last checkpoint and the choice: _before_epoch makes it
        else:  # past the warm-up without the file: the checkpoint's ε is the choice
            self.chosen = float(self.trainer.sess.run(find_shared_variable("epsilon", self.graph)))
            logger.warn("%s is missing; keeping the checkpoint's ε %g" % (os.path.join(self.logdir, "epsilon.json"),
                                                                        self.chosen))
        self.trainer.sess.run(self._assign, {self._value: self.chosen})

    def _before_epoch(self):
        if self.chosen is not None or self.epoch_num <= self.start:
            return
        choice = self._on_rank_0(self._choose)
        self.chosen = float(choice["epsilon"])
        self.trainer.sess.run(self._assign, {self._value: self.chosen})

    def _choose(self) -> dict:
        from .auto_epsilon import EPSILON_FILE, choose_from_checkpoint, summary_line
        from .data import holdout_arrays
        from .fileio import atomic_write_text
        checkpoint = os.path.join(self.logdir, "model-%d" % self.global_step)
        if not os.path.exists(checkpoint + ".index"):
            raise UserError("the warm-up's last checkpoint %s is missing, and --epsilon auto chooses ε from it; "
                            "resume from an earlier checkpoint of the warm-up" % checkpoint)
        r = self.recipe
        images, labels = holdout_arrays(r.dataset, r.holdout, r.data_dir, self.plan.image_size, r.imagenet_aug)
        choice = choose_from_checkpoint(self.plan, checkpoint, images, labels, r.epsilon_tolerance, r.batch_per_tower)
        choice["epoch"] = self.start
        try:
            atomic_write_text(os.path.join(self.logdir, EPSILON_FILE), json.dumps(choice, indent=1) + "\n")
        except OSError as e:
            raise UserError("cannot write %s (%s); %s" % (os.path.join(self.logdir, EPSILON_FILE), e.strerror,
                                                         disk_error_hint()))
        logger.info(summary_line(choice))
        return choice


def discard_table(plan: Plan, stats: Dict[str, tuple], previous=()) -> str:
    """A tabulate table of the discarded blocks (moving average at or above the discard threshold), new ones marked, plus per-group counts."""
    rows = []
    for b in plan.kept_blocks:
        flag, rmax = stats[b.name]
        if counts_as_discarded(flag):
            rows.append([b.name, "%.3f" % flag, "%.3g" % rmax, "new" if b.name not in previous else ""])
    groups = []
    for g in plan.groups:
        in_group = plan.blocks_in_group(g, kept_only=True)
        gone = sum(1 for b in in_group if counts_as_discarded(stats[b.name][0]))
        groups.append("group %d: %d/%d discarded" % (g, gone, len(in_group)))
    table = tabulate(rows, headers=["block", "is_discarded (avg)", "max|F| (avg)", ""]) if rows else "(none discarded)"
    return table + "\n" + ", ".join(groups)
