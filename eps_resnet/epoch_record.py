"""The record of each epoch: one line in discards.jsonl (the gates' statistics, the kernels' summary, each
pruning method's part, the epoch's errors), the log's table of discarded blocks, live TensorBoard figures.
"""
import os
from typing import List

import numpy as np

from . import UserError
from .fileio import append_json_line, disk_error_hint
from .gate_callbacks import discard_table
from .rundir import DISCARDS_FILE, counts_as_discarded, discarded_in_record, read_records
from .tfcompat import tfv1
from .tfgraph import find_shared_variable

from tensorpack.callbacks import Callback
from tensorpack.utils import logger


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
