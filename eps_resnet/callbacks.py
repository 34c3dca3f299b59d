"""Training callbacks of the method: gate agreement (and the reduced network validation scores), the learning-rate
setter, the per-rank epoch log, the epoch recorder (discards.jsonl, live TensorBoard figures).

State that decides the future (which learning-rate schedule is in force) is rebuilt on resume from the
per-epoch records in `discards.jsonl`, so a restarted run continues with the same schedule. What keeps a run
safe and resumable (checkpoints, guards, stats.json) is in `durability.py`.
"""
import json
import os

from typing import Dict, List

import numpy as np
from tabulate import tabulate

from . import UserError
from .fileio import append_json_line, disk_error_hint
from .gate import average_gate_statistics, unpack_gate_statistics
from .model import REDUCED_KEEP

from .plan import Plan
from .rundir import DISCARDS_FILE, counts_as_discarded, discarded_in_record, read_records
from .tfcompat import tfv1
from .tfgraph import find_shared_variable

from tensorpack.callbacks import Callback, HyperParamSetter
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


class LearningRateSetter(HyperParamSetter):
    """Sets `learning_rate` from a LearningRatePolicy; in adaptive mode it reads the epoch's discarded count
    from a GateAgreement callback, which must come earlier in the callback list.
    """

    def __init__(self, policy, gates=None):
        super().__init__("learning_rate")
        if policy.adaptive and gates is None:
            raise ValueError("an adaptive learning-rate policy needs the GateAgreement callback")
        self.policy = policy
        self.gates = gates
        self.reset_this_epoch = False

    def _before_train(self):
        value = self.policy.scheduled_value(self.epoch_num)
        if value is not None:
            self.param.set_value(value)
            logger.info("learning rate %g at epoch %d (%s schedule)" % (value, self.epoch_num, self._schedule_name()))

    def _schedule_name(self):
        return "standard" if self.policy.last_reset is None else "fast from epoch %d" % self.policy.last_reset

    def _get_value_to_set(self):
        cnt = self.gates.discarded_cnt if self.policy.adaptive else None
        value, self.reset_this_epoch = self.policy.end_of_epoch(self.epoch_num, cnt)
        if self.reset_this_epoch:
            logger.info("adaptive learning rate: discarded blocks rose to %.2f at epoch %d; learning rate reset to "
                        "%g, fast schedule from now: %s" % (cnt, self.epoch_num, value, self.policy.schedule))
        return value


class RankEpochLog(Callback):
    """One line per epoch on every rank of a Horovod run: the learning rate, ε and discarded count in force.

    Every rank must print the same numbers; the line lets a user (and the tests) see that they do.
    Place it after the ε and learning-rate setters.
    """
    _chief_only = False

    def __init__(self, ranks, gates=None, lr_setter=None):
        self.ranks = ranks
        self.gates = gates
        self.lr_setter = lr_setter

    def _setup_graph(self):
        found = {name: find_shared_variable(name, self.graph) for name in ("epsilon", "learning_rate")}
        self._values = {name: v for name, v in found.items() if v is not None}

    def _trigger_epoch(self):
        values = self.trainer.sess.run(self._values)
        line = "rank %d of %d, epoch %d: learning_rate %r" % (self.ranks.rank, self.ranks.size, self.epoch_num,
                                                             float(values["learning_rate"]))
        if "epsilon" in values:
            line += " epsilon %r" % float(values["epsilon"])
        if self.gates is not None and self.gates.discarded_cnt is not None:
            line += " discarded_cnt %r (this rank alone %r)" % (self.gates.discarded_cnt,
                                                                self.gates.local_discarded_cnt)
        if self.lr_setter is not None:
            line += " lr_reset %s" % self.lr_setter.reset_this_epoch
        logger.info(line)


def kernel_statistics(values: List[np.ndarray]) -> dict:
    """Summary of one block's residual-branch kernels: norm, max |w| and percentiles (for paper Fig. 5)."""
    flat = np.concatenate([v.ravel() for v in values]) if values else np.zeros(1)
    pct = np.percentile(flat, [0, 10, 25, 50, 75, 90, 100])
    return {"norm": float(np.linalg.norm(flat)), "abs_max": float(np.abs(flat).max()),
            "percentiles": [float(p) for p in pct]}


class EpochRecorder(Callback):
    """At each epoch end, one record in discards.jsonl, and for a gated run a table of the discarded blocks (new
    ones marked) in the log.

    A record holds epoch, global step, ε, learning rate, whether the LR was reset, the epoch's errors, and per
    block statistics of its residual-branch kernels; for a gated run also discarded_cnt (sum of the blocks'
    moving averages of is_discarded) and per block the moving averages of is_discarded and of the batch max |F|
    (GateAgreement's, averaged over Horovod ranks). A plain run's records (`"gated": false`) carry the kernels
    only: they are the control of the weight-collapse figure. A pruning method may add its own part (channels:
    the slots' norms; eps_resnet.methods). Runs on rank 0 only.
    """

    def __init__(self, plan, logdir, gates=None, lr_setter=None, live_figures=True, methods=()):
        self.plan = plan
        self.methods = [m for m in methods if m.record_variables(plan)]  # those with a part in each record
        self.gates = gates
        self.live_figures = live_figures
        self.path = os.path.join(logdir, DISCARDS_FILE)
        self.lr_setter = lr_setter
        self._previous = set()

    def _setup_graph(self):
        variables = {v.op.name: v for v in tfv1.global_variables()}
        self._kernels = {b.name: [variables[k] for k in b.residual_kernels] for b in self.plan.kept_blocks}
        self._epsilon = find_shared_variable("epsilon", self.graph)
        self._lr = find_shared_variable("learning_rate", self.graph)
        self._method_variables = {name: variables[name] for m in self.methods for name in m.record_variables(self.plan)}

    def _before_train(self):
        # records of the epochs before this (possibly resumed) start, read once and then kept in memory
        self._records = [r for r in read_records(os.path.dirname(self.path)) if r["epoch"] <= self.epoch_num]
        self._previous = set(discarded_in_record(self._records[-1] if self._records else None))

    def _trigger_epoch(self):
        sess = self.trainer.sess
        kernels = sess.run(self._kernels)
        lr = float(sess.run(self._lr))
        reset = bool(self.lr_setter.reset_this_epoch) if self.lr_setter else False
        # a scalar of its own: resets happen while the rate is already at its start value, invisible in its curve
        self.trainer.monitors.put_scalar("lr_reset", float(reset))
        blocks = {name: {"kernels": kernel_statistics(values)} for name, values in kernels.items()}
        record = {"epoch": self.epoch_num, "global_step": int(self.global_step), "learning_rate": lr,
                  "lr_reset": reset, "gated": self.gates is not None, "blocks": blocks}
        if self.gates is not None:
            stats = self.gates.stats
            for name, (flag, rmax) in stats.items():
                blocks[name].update(is_discarded=flag, response_max=rmax)
            record.update(epsilon=float(sess.run(self._epsilon)), discarded_cnt=float(sum(f for f, _ in stats.values())))
        if self.methods:
            values = sess.run(self._method_variables)
            open_blocks = [n for n, b in blocks.items() if not counts_as_discarded(b.get("is_discarded"))]
            for method in self.methods:
                record[method.report_key] = method.epoch_record(self.plan, values, open_blocks,
                                                                self.trainer.monitors.put_scalar)
        for key in ("val_error_reduced", "val_error_top5_reduced", "val_error", "val_side_error", "val_error_top5",
                    "train_error", "side_train_error"):
            value = self._latest(key)
            if value is not None:
                record[key] = value
        self._records.append(record)
        try:
            append_json_line(self.path, record)
        except OSError as e:
            raise UserError("cannot write %s (%s); %s" % (self.path, e.strerror, disk_error_hint()))
        if self.gates is None:
            return
        if self.live_figures:
            self._put_figures()
        discarded = [n for n, (f, _) in stats.items() if counts_as_discarded(f)]
        logger.info("epoch %d: %d of %d blocks discarded (discarded_cnt %.2f, ε %.3g, lr %.3g)\n%s"
                    % (self.epoch_num, len(discarded), len(stats), record["discarded_cnt"], record["epsilon"], lr,
                       discard_table(self.plan, stats, self._previous)))
        self._previous = set(discarded)

    def _put_figures(self):
        """The figures worth watching live (figures.LIVE_FIGURES) as TensorBoard image summaries."""
        from .figures import LIVE_FIGURES, RunRecords, draw, figure_png
        try:
            runrec = RunRecords(self.plan, self._records)
            for name in LIVE_FIGURES:
                self.trainer.monitors.put_summary(image_summary("figures/" + name, figure_png(draw(name, runrec))))
        except Exception as e:  # a figure must never stop a training run
            logger.warn("could not draw the TensorBoard figures: %s" % e)

    def _latest(self, name):
        try:
            value = self.trainer.monitors.get_latest(name)
        except KeyError:
            return None
        return float(value) if value is not None else None


def image_summary(tag, rgb):
    """A TensorBoard image summary of an RGB uint8 array (tensorpack's helper uses an API numpy 2 removed)."""
    import cv2
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    image = tfv1.Summary.Image(height=rgb.shape[0], width=rgb.shape[1], colorspace=3, encoded_image_string=png.tobytes())
    return tfv1.Summary(value=[tfv1.Summary.Value(tag=tag, image=image)])


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
        batch = r.batch // max(1, len(r.gpus)) if r.batch_is_total else r.batch  # a tower's, as the gates see
        choice = choose_from_checkpoint(self.plan, checkpoint, images, labels, r.epsilon_tolerance, batch)
        choice["epoch"] = self.start
        try:
            atomic_write_text(os.path.join(self.logdir, EPSILON_FILE), json.dumps(choice, indent=1) + "\n")
        except OSError as e:
            raise UserError("cannot write %s (%s); %s" % (os.path.join(self.logdir, EPSILON_FILE), e.strerror,
                                                         disk_error_hint()))
        logger.info(summary_line(choice))
        return choice
