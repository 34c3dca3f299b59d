"""The sparsity-promoting gate S of ε-ResNet (paper Sec. 3, Fig. 4(c)).

    S(F) = 0  if |F_i| < ε for every element i of the whole batch tensor F,   S(F) = F  otherwise.

The paper builds it from four ReLUs and one multiplicative gate, with a large constant L:

    s = max_i relu(F_i - ε) + relu(-F_i - ε)        >= 0, and 0 iff every |F_i| <= ε
    T = relu(relu(-L s + 1) · (-L) + 1)              0 when s == 0, 1 when s >= 1/L
    S = T · F

The graph version computes the same value with the same gradient almost everywhere, more cheaply:
- `s` equals relu(max_i |F_i| - ε), so one reduction of |F| per example (`response_max`, shape [batch])
  and a max over the batch replace two full-tensor ReLUs and a sum;
- T is flat except in a band of width 1/L where its slope is about L² = 1e12, so it sits behind
  stop_gradient: that removes a rare gradient spike and no useful signal. The reduction then needs no
  backward pass at all.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .tfcompat import tf
from tensorpack.models import layer_register

L_CONSTANT = 1e6


def _relu_np(v):
    return np.maximum(v, 0.0)


def strict_identity_numpy(F: np.ndarray, epsilon: float) -> np.ndarray:
    """Reference S(F) in NumPy, written with the paper's four ReLUs. F is the whole batch tensor."""
    F = np.asarray(F, dtype=np.float64)
    s = np.max(_relu_np(F - epsilon) + _relu_np(-F - epsilon))
    T = _relu_np(_relu_np(-L_CONSTANT * s + 1.0) * (-L_CONSTANT) + 1.0)
    return T * F


def _keep_factor(batch_max, epsilon):
    """T of the paper from the batch max of |F| (a scalar), without gradient."""
    s = tf.nn.relu(batch_max - epsilon)
    T = tf.nn.relu(tf.nn.relu(-L_CONSTANT * s + 1.0) * (-L_CONSTANT) + 1.0)
    return tf.stop_gradient(T)


def response_max_per_example(F):
    """max |F| over every axis but the batch axis: shape [batch]."""
    return tf.reduce_max(tf.abs(F), axis=list(range(1, F.shape.rank)))


def strict_identity(F, epsilon):
    """S(F) in any tf.compat.v1 graph. `epsilon` is a float or a scalar tensor/variable."""
    epsilon = tf.cast(epsilon, F.dtype)
    return _keep_factor(tf.reduce_max(response_max_per_example(F)), epsilon) * F


def gated_sum(shortcut, residual, keep):
    """shortcut + keep · residual, without touching the residual when keep is exactly 0 or 1.

    T is 0 or 1 except in a band of width 1/L² (reachable in float32 only for ε near 0). Taking the
    exact branch for 0 and 1 gives bit-identical values to `shortcut + keep * residual` and skips two
    full-tensor multiplies per block and step (forward, and the gradient of the residual).
    """
    return tf.cond(tf.equal(keep, 1.0),
                   lambda: shortcut + residual,
                   lambda: tf.cond(tf.equal(keep, 0.0),
                                   lambda: tf.identity(shortcut),
                                   lambda: shortcut + keep * residual))


@layer_register(log_shape=False, use_scope=None)
def StrictIdentityGate(residual, epsilon, shortcut=None):
    """Gate a block's residual response; with `shortcut`, return shortcut + S(residual).

    Called without a layer name inside a block's variable scope, it creates the named tensors
    `<block>/response_max` (per example, [batch]), `<block>/batch_response_max` (scalar),
    `<block>/keep` (T) and `<block>/is_discarded` (1.0 when the gate is closed).
    """
    epsilon = tf.cast(epsilon, residual.dtype)
    per_example = tf.identity(response_max_per_example(residual), name="response_max")
    batch_max = tf.reduce_max(per_example, name="batch_response_max")
    keep = tf.identity(_keep_factor(batch_max, epsilon), name="keep")
    tf.cast(tf.equal(keep, 0.0), tf.float32, name="is_discarded")
    if shortcut is None:
        return keep * residual
    return gated_sum(shortcut, residual, keep)


# ---- the gate statistics vector --------------------------------------------------------------------------------
# The model keeps one moving-average vector for all gates; callbacks read it back. Its layout lives here only:
# the is_discarded flags of the gated blocks in plan order, then their batch max|F|.
GATE_STATISTICS_TENSOR = "gate_statistics_ema:0"


def pack_gate_statistics(block_names: Sequence[str], gates: Sequence[tuple]) -> List[tuple]:
    """[(summary name, scalar tensor)] in the vector's order, from per-block (is_discarded, batch max|F|)."""
    names = list(block_names)
    return ([(n + "/is_discarded", flag) for n, (flag, _) in zip(names, gates)]
            + [(n + "/batch_response_max", rmax) for n, (_, rmax) in zip(names, gates)])


def unpack_gate_statistics(block_names: Sequence[str], vector) -> Dict[str, Tuple[float, float]]:
    """{block: (moving average of is_discarded, moving average of batch max|F|)} from the vector's values."""
    names = list(block_names)
    n = len(names)
    return {name: (float(vector[i]), float(vector[n + i])) for i, name in enumerate(names)}
