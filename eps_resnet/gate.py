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

from .tfcompat import tf, tfv1
from .tfgraph import add_vector_moving_summary
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
    """max |F| over every axis but the batch axis: shape [batch].

    Written max(max F, -min F): two reads of F and no full-size temporary, where max(abs(F)) writes |F| first."""
    axes = list(range(1, F.shape.rank))
    return tf.maximum(tf.reduce_max(F, axis=axes), -tf.reduce_min(F, axis=axes))


def strict_identity(F, epsilon):
    """S(F) in any tf.compat.v1 graph. `epsilon` is a float or a scalar tensor/variable."""
    epsilon = tf.cast(epsilon, F.dtype)
    return _keep_factor(tf.reduce_max(response_max_per_example(F)), epsilon) * F


def gated_sum(shortcut, residual, keep):
    """shortcut + keep · residual, exactly `shortcut` when keep is 0, without control flow or a select.

    Released code: shortcut + T·F, a multiply. When T is exactly 0 that sum can differ from the shortcut in
    bits (-0 + 0 is +0; 0 · inf is NaN). Here the sum is written shortcut - mul_no_nan(F, -T):
    - shut (T = 0): mul_no_nan gives +0 whatever F holds (inf, NaN), and x - (+0) is x bit for bit, -0 included;
    - open (T = 1): F · -1 is -F exactly and x - (-F) is x + F exactly, as in the released code;
    - in the band 0 < T < 1 (width 1/L², reachable in float32 only for ε near 0) it is shortcut + T·F.
    Two element-wise passes that fuse under XLA. A tf.cond would lower to Switch/Merge ops whose predicate is
    copied to the host once per block and step; a select on the scalar predicate costs a broadcast pass (on this
    CPU it took more time than the rest of the gate together).

    The gradient is written by hand (`_gated_sum_gradient`), attached the way tf.custom_gradient does it, to an
    IdentityN over the result and the inputs. tf.custom_gradient itself scans every variable of the graph on each
    call, which made building a 375-block network quadratic in its depth.
    """
    out = shortcut - tf.math.multiply_no_nan(residual, -keep)
    with tfv1.get_default_graph().gradient_override_map({"IdentityN": _GATED_SUM_GRADIENT}):
        return tf.identity_n([out, shortcut, residual, keep])[0]


_GATED_SUM_GRADIENT = "EpsResNetGatedSum"


@tf.RegisterGradient(_GATED_SUM_GRADIENT)
def _gated_sum_gradient(op, grad, *_unused_outputs):
    """TensorFlow's own gradient of the sum would be ~20 graph ops per block (broadcast reductions for the
    multiply and the subtraction); the gradient it computes is just this: the shortcut passes g, the residual gets
    keep·g (0 when shut), and keep has none (the paper's T is held constant). Nothing flows back through the
    forward ops of the sum (input 0)."""
    keep = op.inputs[3]
    return [None, grad, keep * grad, None]


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
# Each training tower stacks its gates' statistics into one vector; the mean over towers feeds one moving average
# that the callbacks read back. Its layout lives here only: the is_discarded flags of the gated blocks in plan
# order, then their batch max|F|.
_PER_TOWER = "eps_resnet/gate_statistics_per_tower"


def add_tower_gate_statistics(gates: Sequence[tuple]):
    """Record this training tower's per-block (is_discarded, batch max|F|) tensors, in plan order."""
    vector = tf.stack([tf.cast(flag, tf.float32) for flag, _ in gates]
                      + [tf.cast(rmax, tf.float32) for _, rmax in gates])
    tfv1.add_to_collection(_PER_TOWER, tf.stop_gradient(vector))


def average_gate_statistics(block_names: Sequence[str]):
    """The moving average of the gate statistics, averaged over the graph's training towers (one per GPU).

    Call it once, after every tower is built: tensorpack's trainers build the towers before the callbacks'
    graphs, so the GateAgreement callback calls it. Each block's averages and `discarded_cnt` /
    `discarded_ratio` also go to the monitors (stats.json, TensorBoard). Returns the averaged vector.
    """
    graph = tfv1.get_default_graph()
    towers = graph.get_collection(_PER_TOWER)
    if not towers:
        raise ValueError("no gate statistics in this graph: build a gated model's training tower first")
    with graph.name_scope(None):
        per_step = towers[0] if len(towers) == 1 else tf.add_n(towers) / float(len(towers))
        names = list(block_names)
        tags = [n + "/is_discarded" for n in names] + [n + "/batch_response_max" for n in names]
        average = add_vector_moving_summary(tags, per_step)
        flags = average[:len(names)]
        discarded_cnt = tf.reduce_sum(flags)
        tfv1.summary.scalar("discarded_cnt-summary", discarded_cnt)
        tfv1.summary.scalar("discarded_ratio-summary", discarded_cnt / float(len(names)))
        return tf.identity(average, name="gate_statistics_ema")


def unpack_gate_statistics(block_names: Sequence[str], vector) -> Dict[str, Tuple[float, float]]:
    """{block: (moving average of is_discarded, moving average of batch max|F|)} from the vector's values."""
    names = list(block_names)
    n = len(names)
    return {name: (float(vector[i]), float(vector[n + i])) for i, name in enumerate(names)}
