"""Callbacks that keep a run durable and honest: checkpoints written last in each epoch (so a checkpoint means its
epoch's records are on disk), stats.json written or the run stopped, guards that end a run with one line (a
non-finite loss, a failed input worker), validation that tolerates skipped images, and --load's weights-only
initialisation.
"""
import json
import math
import os

from . import UserError
from .fileio import disk_error_hint, write_failure_reason
from .rundir import checkpoint_steps, remove_checkpoint
from .tfcompat import tf, tfv1

from tensorpack.callbacks import Callback, InferenceRunner, JSONWriter
from tensorpack.callbacks.monitor import MonitorBase
from tensorpack.tfutils.sessinit import SessionInit
from tensorpack.utils import logger


class NaNGuard(Callback):
    """Stops training at the first non-finite loss; the last checkpoint (previous epoch) is left as it was."""

    def __init__(self, tensor_name="cost"):
        self.tensor_name = tensor_name

    def _setup_graph(self):
        self._tensor = self.trainer.towers.training()[0].get_tensor(self.tensor_name)

    def _before_run(self, _):
        return tfv1.train.SessionRunArgs(fetches=self._tensor)

    def _after_run(self, _, values):
        loss = values.results
        if not math.isfinite(float(loss)):
            raise TrainingDiverged("training loss became %s at epoch %d, global step %d; stopped. The last "
                                   "checkpoint in %s is intact: resume from it with a lower learning rate "
                                   "(--resume) or check the input data"
                                   % (loss, self.epoch_num, self.global_step, logger.get_logger_dir()))


class InputWatchdog(Callback):
    """A dataflow worker that dies ends the run with one line instead of a hang (eps_resnet.data.watchdog)."""

    def _before_train(self):
        from .data.watchdog import watch_workers
        self._stop = watch_workers()

    def _after_train(self):
        self._stop()


class TrainingDiverged(UserError):
    pass



class CheckpointWriter:
    """Writes every global variable to a `model-N` checkpoint with one SaveV2 op, in the format tf.train.Saver
    writes and reads, and keeps the newest `max_to_keep`.

    tf.train.Saver also builds a restore op and an identity for each variable, which training never runs:
    2 of every 9 ops of a deep network's graph, and each op costs start-up time (TensorFlow copies and prunes the
    whole graph for every new set of fetches). The save reads each variable through the read op the variable
    already has. Restoring (resume, export) goes through tensorpack's and TensorFlow's own savers.
    """

    def __init__(self, logdir, max_to_keep):
        self.logdir, self.max_to_keep = logdir, max_to_keep
        graph = tfv1.get_default_graph()
        if tfv1.get_collection(tfv1.GraphKeys.SAVEABLE_OBJECTS):
            raise ValueError("the graph has saveable objects besides variables; CheckpointWriter saves variables only")
        variables = sorted(tfv1.global_variables(), key=lambda v: v.op.name)
        with graph.name_scope("checkpoint_writer"), tf.device("/cpu:0"):
            self._prefix = tfv1.placeholder(tf.string, [], name="prefix")
            self._save = tf.raw_ops.SaveV2(prefix=self._prefix, tensor_names=[v.op.name for v in variables],
                                           shape_and_slices=[""] * len(variables),
                                           tensors=[self._read_op(graph, v) for v in variables])

    @staticmethod
    def _read_op(graph, variable):
        try:  # the read op a resource variable makes when it is created
            return graph.get_tensor_by_name(variable.op.name + "/Read/ReadVariableOp:0")
        except KeyError:
            return variable.value()

    def save(self, sess, step) -> str:
        """Write `model-<step>`, point TensorFlow's `checkpoint` file at it, then delete the checkpoints before the
        newest `max_to_keep` of those up to `step` (later ones, left by another start of the run, are not ours)."""
        prefix = os.path.join(self.logdir, "model-%d" % step)
        sess.run(self._save, {self._prefix: prefix})
        steps = checkpoint_steps(self.logdir)
        kept = [s for s in steps if s <= step][-self.max_to_keep:]
        tfv1.train.update_checkpoint_state(self.logdir, os.path.basename(prefix),
                                           all_model_checkpoint_paths=["model-%d" % s for s in kept])
        for old in steps:
            if old < kept[0]:
                remove_checkpoint(os.path.join(self.logdir, "model-%d" % old))
        return prefix


class EpochCheckpoint(MonitorBase):
    """Saves `model-N` at each epoch end, and stops the run (one line, exit 2) if it cannot be written.

    It is passed as the last monitor, so it runs after every callback and after stats.json and the events are
    written: a checkpoint of epoch E means all of E's records are on disk (rundir.trim_for_resume relies on
    it). A failed save removes its partial files; the previous checkpoint stays intact. (tensorpack's
    ModelSaver logs such errors and trains on, so a full disk used to end "successfully" without checkpoints.)
    """
    _chief_only = True

    def __init__(self, logdir, max_to_keep=3):
        self.logdir = logdir
        self.max_to_keep = max_to_keep

    def _setup_graph(self):
        self._writer = CheckpointWriter(self.logdir, self.max_to_keep)

    def _trigger_epoch(self):
        prefix = os.path.join(self.logdir, "model-%d" % self.global_step)
        try:
            self._writer.save(self.trainer.sess, self.global_step)
        except (OSError, tf.errors.OpError) as e:
            remove_checkpoint(prefix)
            reason = write_failure_reason(e)
            steps = [s for s in checkpoint_steps(self.logdir) if s < self.global_step]
            kept = ("the last good checkpoint model-%d is intact" % steps[-1]) if steps else "no checkpoint was written"
            raise UserError("cannot write checkpoint %s (%s); %s; %s" % (prefix, reason, kept, disk_error_hint()))
        logger.info("checkpoint saved: %s" % prefix)


class StrictJSONWriter(JSONWriter):
    """tensorpack's stats.json writer, but a failed write stops the run instead of being logged and ignored."""

    def _write_stat(self):
        tmp = self._fname + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self._stats, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._fname)
        except OSError as e:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise UserError("cannot write %s (%s); %s" % (self._fname, e.strerror, disk_error_hint()))


class TolerantInferenceRunner(InferenceRunner):
    """An InferenceRunner whose data may end before its nominal length.

    A validation flow that skips unreadable images yields fewer batches than len() promised; tensorpack's
    runner treats that as an input error and stops training. This one evaluates what there is.
    """

    def _trigger(self):
        for inf in self.infs:
            inf.before_epoch()
        self._input_source.reset_state()
        try:
            for _ in range(self._size if self._size > 0 else 2 ** 62):
                self._hooked_sess.run(fetches=[])
        except (StopIteration, tf.errors.OutOfRangeError):
            pass  # fewer batches than nominal: some images were unreadable (counted in the log)
        for inf in self.infs:
            inf.trigger_epoch()


class WeightsInit(SessionInit):
    """Initialise from a checkpoint's weights only (--load): not its step counter, learning rate, ε, weight decay,
    mean image, gate statistics or optimiser slots, which belong to the run that wrote it."""

    NOT_WEIGHTS = ("global_step", "learning_rate", "epsilon", "weight_decay", "mean_image", "channel_mean",
                   "channel_std")

    def __init__(self, ckpt):
        self.ckpt = ckpt

    def _setup_graph(self):
        in_ckpt = tf.train.load_checkpoint(self.ckpt).get_variable_to_shape_map()
        self._names = {}
        for v in tfv1.global_variables():
            name = v.op.name
            if (name in in_ckpt and name not in self.NOT_WEIGHTS and not name.startswith("vector_EMA/")
                    and not name.endswith("/Momentum")):
                self._names[name] = v
        self._saver = tfv1.train.Saver(var_list=self._names)

    def _run_init(self, sess):
        logger.info("initialising %d weight tensors from %s" % (len(self._names), self.ckpt))
        self._saver.restore(sess, self.ckpt)
