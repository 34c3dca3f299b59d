"""The learning-rate decision of ε-ResNet (the paper's Sec. 4, adaptive learning rate): pure Python, no
TensorFlow, so it can be tested directly and rebuilt on resume from the per-epoch records."""


class LearningRatePolicy:
    """The learning-rate decision of the paper (Sec. 4, adaptive learning rate), free of TensorFlow so it can be tested directly.

    Schedules are lists of (epoch, value): the value is set when that epoch ends (epoch 0: at the start).
    `end_of_epoch(epoch, discarded_cnt)` returns (value to set or None, whether the LR was reset).
    Without `adaptive`, it follows `standard` and ignores discarded_cnt.
    """

    def __init__(self, standard, fast=None, adaptive=False, k=1, threshold=1.0, history=(), last_reset=None):
        self.standard = [tuple(p) for p in standard]
        self.fast = [tuple(p) for p in (fast or standard)]
        self.adaptive = adaptive
        self.k = k
        self.threshold = threshold
        self.history = list(history)    # discarded_cnt at the end of epochs 1, 2, ...
        self.last_reset = last_reset    # epoch of the last reset, None before the first

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

    def end_of_epoch(self, epoch, discarded_cnt=None):
        if not self.adaptive:
            return self.scheduled_value(epoch), False
        self.history.append(float(discarded_cnt))
        k = self.k
        recent_reset = self.last_reset is not None and epoch - self.last_reset < k
        if len(self.history) < k + 1 or recent_reset:
            return self.scheduled_value(epoch), False
        h = self.history[-(k + 1):]
        if max(h) < h[0] + self.threshold:
            return self.scheduled_value(epoch), False
        self.last_reset = epoch
        return self.fast[0][1], True

    @classmethod
    def from_records(cls, records, **kwargs):
        """A policy that has seen the epochs of `records` (discards.jsonl lines, last one per epoch wins)."""
        by_epoch = {r["epoch"]: r for r in records if "epoch" in r}
        epochs = sorted(by_epoch)
        history = [by_epoch[e]["discarded_cnt"] for e in epochs if by_epoch[e].get("discarded_cnt") is not None]
        resets = [e for e in epochs if by_epoch[e].get("lr_reset")]
        return cls(history=history, last_reset=resets[-1] if resets else None, **kwargs)
