"""The hyperparameters that change from epoch to epoch, as pure policies: no TensorFlow, so each can be tested
directly and rebuilt on resume. One tensorpack callback applies any of them (hyperparams.PolicySetter).

A policy answers two questions about epochs (numbered from 1; "epoch 0" is the start of training):
- `value_at_start(epoch)`: the value to set when training (re)starts after `epoch` finished epochs, or None to
  keep the checkpoint's;
- `end_of_epoch(epoch, discarded_cnt)`: the value to set when `epoch` ends, for the next, or None to keep it.
"""
from typing import Optional


class LearningRatePolicy:
    """The learning rate of the paper (Sec. 4): a standard schedule, and in adaptive mode a reset to the start of a
    faster schedule whenever the discarded count rose by `threshold` within `k` epochs.

    Schedules are lists of (epoch, value): the value is set when that epoch ends (epoch 0: at the start).
    Without `adaptive`, it follows `standard` and ignores discarded_cnt. `last_reset` is the epoch of the last
    reset (None before the first).
    """

    def __init__(self, standard, fast=None, adaptive=False, k=1, threshold=1.0, history=(), last_reset=None):
        self.standard = [tuple(p) for p in standard]
        self.fast = [tuple(p) for p in (fast or standard)]
        self.adaptive = adaptive
        self.k = k
        self.threshold = threshold
        self.history = list(history)    # discarded_cnt at the end of epochs 1, 2, ...
        self.last_reset = last_reset

    @property
    def schedule(self):
        if self.last_reset is None:
            return self.standard
        return [(self.last_reset + e, v) for e, v in self.fast]

    def scheduled_value(self, epoch):
        for e, v in self.schedule:
            if e == epoch:
                return v
        return None

    def value_at_start(self, epoch):
        return self.scheduled_value(epoch)

    def end_of_epoch(self, epoch, discarded_cnt=None):
        if not self.adaptive:
            return self.scheduled_value(epoch)
        self.history.append(float(discarded_cnt))
        k = self.k
        recent_reset = self.last_reset is not None and epoch - self.last_reset < k
        if len(self.history) < k + 1 or recent_reset:
            return self.scheduled_value(epoch)
        h = self.history[-(k + 1):]
        if max(h) < h[0] + self.threshold:
            return self.scheduled_value(epoch)
        self.last_reset = epoch
        return self.fast[0][1]

    @classmethod
    def from_records(cls, records, **kwargs):
        """A policy that has seen the epochs of `records` (discards.jsonl lines, last one per epoch wins)."""
        by_epoch = {r["epoch"]: r for r in records if "epoch" in r}
        epochs = sorted(by_epoch)
        history = [by_epoch[e]["discarded_cnt"] for e in epochs if by_epoch[e].get("discarded_cnt") is not None]
        resets = [e for e in epochs if by_epoch[e].get("lr_reset")]
        return cls(history=history, last_reset=resets[-1] if resets else None, **kwargs)


class EpsilonPolicy:
    """ε of the gates: 0 (every gate open, a plain ResNet) until epoch `start` ends, then `epsilon`, as the
    released CIFAR code's warm-up. (--epsilon auto chooses its value at the warm-up's end instead:
    gate_callbacks.AutoEpsilon.)"""

    def __init__(self, epsilon: float, start: int = 0):
        self.epsilon, self.start = epsilon, start

    def value_at_start(self, epoch):
        return 0.0 if epoch < self.start else self.epsilon

    def end_of_epoch(self, epoch, discarded_cnt=None):
        return self.value_at_start(epoch)


class WeightDecayPolicy:
    """Weight decay `base`, times `factor` once per `every` training steps (None: constant), counted at each
    epoch's first step: the released CIFAR/SVHN code decayed it ×0.2 every 480,000 steps in the graph, within
    an epoch; here the step lands in the epoch after (docs/FIDELITY.md)."""

    def __init__(self, base: float, every: Optional[int], steps_per_epoch: int, factor: float = 0.2):
        self.base, self.every, self.steps_per_epoch, self.factor = base, every, steps_per_epoch, factor

    def value_at_start(self, epoch):
        if not self.every:
            return self.base
        return self.base * self.factor ** (epoch * self.steps_per_epoch // self.every)

    def end_of_epoch(self, epoch, discarded_cnt=None):
        return self.value_at_start(epoch)
