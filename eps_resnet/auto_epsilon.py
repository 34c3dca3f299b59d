"""ε chosen during training (`--epsilon auto`; beyond the paper, whose Sec. 5 leaves the choice of ε to future work).

ε is an absolute threshold on response magnitudes, and those depend on the data, its normalisation, the network
and the weight decay. At the end of the warm-up (every gate open), the network's block responses on training
images held out of training are the scale to choose it on. The rule: raise ε through the held-out responses, from
the smallest, and keep the largest value at which switching the gates on (in batches of training's size, a shut
block feeding the next, as training runs them) changes at most `tolerance` percent of the held-out predictions;
stop at the first value that changes more. The changed predictions bound the change of the error from above and
need no labels, so a warm-up network that is still poor (early, at a high learning rate) cannot hide a large
change behind a small net one. Training then goes on with the gates at that ε, and the collapse of the blocks
they shut (weight decay with the learning-rate resets) does the rest.

On the digits no prediction changes up to a knee, and beyond it a tenth to a half of them within a unit of ε
(README, "ε chosen during training"); the rule puts ε at the knee, where the hand-tuned demo ε sat.
The choice and its evidence are written to epsilon.json in the run (rank 0, atomically) and ε is a checkpointed
variable, so a resumed run keeps the choice; a run stopped before choosing chooses from the same checkpoint.
"""
import json
import os
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import UserError

EPSILON_FILE = "epsilon.json"
MAX_CANDIDATES = 40  # passes over the held-out images at most: ~0.1 s each on the digits, seconds on CIFAR


def candidate_epsilons(maxima: np.ndarray, count: int = MAX_CANDIDATES) -> List[float]:
    """Values to try, ascending: the distinct per-image block maxima (an [images, blocks] array, gates open),
    `count` of them evenly spread by rank when there are more."""
    values = np.unique(np.asarray(maxima, np.float64).ravel())
    values = values[values > 0]
    if len(values) > count:
        values = values[np.unique(np.linspace(0, len(values) - 1, count).round().astype(np.int64))]
    return [float(v) for v in values]


def choose_epsilon(candidates: List[float], measure: Callable[[float], dict], tolerance: float) -> Tuple[float, dict]:
    """(ε, evidence): the largest candidate, scanned in ascending order up to the first whose gates change more
    than `tolerance` percent of the held-out predictions; 0.0 (gates open until a response is exactly zero) when
    even the smallest does. `measure(ε)`: {"changed": the fraction of predictions that differ from the open
    network's, ...anything else to record}."""
    tried, chosen = [], 0.0
    for epsilon in candidates:
        tried.append(dict(measure(epsilon), epsilon=epsilon))
        if tried[-1]["changed"] > tolerance / 100.0 + 1e-12:
            break
        chosen = epsilon
    return chosen, {"tolerance": tolerance, "tried": tried}


class HeldOutNetwork:
    """The gated network of a checkpoint, in a graph of its own, over the held-out images in batches of training's
    size (a gate decides on the largest response in its batch, as in training)."""

    def __init__(self, plan, checkpoint: str, images: np.ndarray, labels: np.ndarray, batch_size: int):
        from .inference import BuiltNetwork
        from .tfcompat import tf, tfv1
        self.net = BuiltNetwork(plan, checkpoint, epsilon=0.0, image_shape=images.shape[1:])
        with self.net.net.graph.as_default():
            self._value = tfv1.placeholder(tf.float32, [])
            self._assign = self.net.net.epsilon.assign(self._value)
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.blocks = [b.name for b in plan.kept_blocks]
        self.open_predictions, self.open_maxima = None, None
        self.open_predictions, self.open_maxima = self.outputs(0.0)

    def outputs(self, epsilon: float):
        """(predicted classes, per-image block maxima [images, blocks]) with the gates at `epsilon`."""
        self.net.sess.run(self._assign, {self._value: epsilon})
        outs = self.net.run(dict(self.net.net.response_max, logits=self.net.net.logits), self.images, self.batch_size)
        return outs["logits"].argmax(1), np.stack([outs[b] for b in self.blocks], axis=1)

    def measure(self, epsilon: float) -> dict:
        predictions, _ = self.outputs(epsilon)
        return {"changed": float(np.mean(predictions != self.open_predictions)),
                "error": float(np.mean(predictions != self.labels))}

    def close(self):
        self.net.close()


def choose_from_checkpoint(plan, checkpoint: str, images: np.ndarray, labels: np.ndarray, tolerance: float,
                           batch_size: int) -> dict:
    """The choice for the network in `checkpoint` (gates open so far), as epsilon.json records it."""
    net = HeldOutNetwork(plan, checkpoint, images, labels, batch_size)
    try:
        maxima = net.open_maxima
        epsilon, evidence = choose_epsilon(candidate_epsilons(maxima), net.measure, tolerance)
    finally:
        net.close()
    return dict(epsilon=epsilon, rule="the largest ε, scanned upwards through the held-out responses, whose gates "
                                      "change at most the tolerance (percent) of the held-out predictions",
                checkpoint=os.path.basename(checkpoint), held_out_images=int(len(labels)), batch=batch_size,
                open_error=float(np.mean(net.open_predictions != labels)),
                response_quantiles={q: float(np.quantile(maxima, float(q))) for q in ("0.1", "0.25", "0.5", "0.75", "0.9")},
                **evidence)


def read_choice(logdir: str) -> Optional[dict]:
    path = os.path.join(logdir, EPSILON_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            choice = json.load(f)
        float(choice["epsilon"])
        return choice
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError("%s is unreadable (%s); restore it, or delete it and resume from a checkpoint of the "
                        "warm-up to choose ε again" % (path, e))


def summary_line(choice: dict) -> str:
    tried = choice["tried"]
    at = [t for t in tried if t["epsilon"] == choice["epsilon"]]
    beyond = [t for t in tried if t["epsilon"] > choice["epsilon"]]
    return ("ε chosen: %.4g (tolerance %g%%: gates on at it change %.1f%% of %d held-out predictions, error %.2f%% "
            "against %.2f%% open%s; %d values tried)"
            % (choice["epsilon"], choice["tolerance"], 100 * (at[0]["changed"] if at else 0.0),
               choice["held_out_images"], 100 * (at[0]["error"] if at else choice["open_error"]),
               100 * choice["open_error"], "; at %.4g: %.1f%% changed, error %.2f%%"
               % (beyond[0]["epsilon"], 100 * beyond[0]["changed"], 100 * beyond[0]["error"]) if beyond else "",
               len(tried)))
