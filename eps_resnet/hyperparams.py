"""The hyperparameters that change while a run trains (learning rate, ε, weight decay): each a shared graph
variable set by one callback from a pure per-epoch policy (eps_resnet.schedule), and one line per epoch and
Horovod rank that shows them.

A policy's state that decides the future (which learning-rate schedule is in force) is rebuilt on resume from
the per-epoch records in discards.jsonl (LearningRatePolicy.from_records), so a restarted run goes on the same way.
"""
from .tfgraph import find_shared_variable

from tensorpack.callbacks import Callback, HyperParamSetter
from tensorpack.utils import logger


class PolicySetter(HyperParamSetter):
    """Sets the shared variable `name` from `policy`: when training (re)starts, and when each epoch ends. A
    policy that reads the discarded count (the adaptive learning rate) reads it from `gates`
    (gate_callbacks.GateAgreement), which must come earlier in the callback list."""

    def __init__(self, name: str, policy, gates=None):
        super().__init__(name)
        self.policy = policy
        self.gates = gates

    def _before_train(self):
        value = self.policy.value_at_start(self.epoch_num)
        if value is not None:
            self.param.set_value(value)
            self._last_value = value  # tensorpack's setter logs each change from this
            logger.info("%s %g from epoch %d" % (self.param.readable_name, value, self.epoch_num + 1))

    def _get_value_to_set(self):
        cnt = self.gates.discarded_cnt if self.gates is not None else None
        return self.policy.end_of_epoch(self.epoch_num, cnt)


class LearningRateSetter(PolicySetter):
    """The learning rate (schedule.LearningRatePolicy); in adaptive mode a GateAgreement must be given."""

    def __init__(self, policy, gates=None):
        if policy.adaptive and gates is None:
            raise ValueError("an adaptive learning-rate policy needs the GateAgreement callback")
        super().__init__("learning_rate", policy, gates)

    @property
    def reset_this_epoch(self) -> bool:
        return self.policy.last_reset is not None and self.policy.last_reset == self.epoch_num

    def _get_value_to_set(self):
        value = super()._get_value_to_set()
        if self.reset_this_epoch:
            logger.info("adaptive learning rate: discarded blocks rose to %.2f at epoch %d; learning rate reset to "
                        "%g, fast schedule from now: %s" % (self.gates.discarded_cnt, self.epoch_num, value,
                                                             self.policy.schedule))
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
