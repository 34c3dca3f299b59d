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
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

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


@dataclass(frozen=True)
class GateConstants:
    """The scalars every gate of a tower reads: ε and the constants of T, made once per tower.

    Built per gate they were 9 constant ops each, in the training and in the inference tower; every op costs
    start-up time, more as the graph grows (TensorFlow copies and prunes the whole graph for each new set of
    fetches). Make them with `GateConstants.of(epsilon)`.
    """
    epsilon: object       # scalar tensor, the residual's dtype
    minus_l: object       # -L
    one: object
    zero: object
    example_axes: object  # [1, 2, 3]: every axis of an NHWC or NCHW tensor but the batch axis
    batch_axis: object    # 0
    branch: bool = False  # training on a CPU: the gated sum branches on T (see gated_sum)

    @staticmethod
    def of(epsilon, dtype=tf.float32, rank=4, branch=False):
        """`epsilon`: a float, a scalar tensor or a variable; `branch`: see gated_sum."""
        with tf.name_scope("gate_constants"):
            return GateConstants(epsilon=tf.cast(epsilon, dtype), minus_l=tf.constant(-L_CONSTANT, dtype),
                                 one=tf.constant(1.0, dtype), zero=tf.constant(0.0, dtype),
                                 example_axes=tf.constant(list(range(1, rank))), batch_axis=tf.constant(0),
                                 branch=branch)


def _keep_factor(batch_max, c: GateConstants, name=None):
    """T of the paper from the batch max of |F| (a scalar), without gradient."""
    s = tf.nn.relu(batch_max - c.epsilon)
    T = tf.nn.relu(tf.nn.relu(c.minus_l * s + c.one) * c.minus_l + c.one)
    return tf.stop_gradient(T, name=name)


def response_max_per_example(F, c: GateConstants, name=None):
    """max |F| over every axis but the batch axis: shape [batch].

    Written max(max F, -min F): two reads of F and no full-size temporary, where max(abs(F)) writes |F| first."""
    return tf.maximum(tf.reduce_max(F, axis=c.example_axes), -tf.reduce_min(F, axis=c.example_axes), name=name)


def strict_identity(F, epsilon):
    """S(F) in any tf.compat.v1 graph. `epsilon` is a float or a scalar tensor/variable."""
    c = GateConstants.of(epsilon, F.dtype, F.shape.rank)
    return _keep_factor(tf.reduce_max(response_max_per_example(F, c)), c) * F


def gated_sum(shortcut, residual, keep, branch_on=None):
    """shortcut + keep · residual, exactly `shortcut` when keep is 0 and exactly shortcut + residual when it is 1.

    Released code: shortcut + T·F, a multiply. When T is exactly 0 that sum can differ from the shortcut in
    bits (-0 + 0 is +0; 0 · inf is NaN). Two ways to be exact, chosen by the device that trains:
    - arithmetic (GPUs, XLA, inference graphs): shortcut - mul_no_nan(F, -T). Shut (T = 0): mul_no_nan gives +0
      whatever F holds (inf, NaN), and x - (+0) is x bit for bit, -0 included; open (T = 1): x - (-F) is x + F
      exactly; in the band 0 < T < 1 (width 1/L², reachable in float32 only for ε near 0) it is shortcut + T·F.
      No control flow and no select: on a GPU a branch would copy T to the host in every block and step, a
      select costs a broadcast pass, and the two element-wise passes fuse under XLA.
    - `branch_on` = (T == 1, T == 0) (training on a CPU, where these predicates are already in host memory):
      Switch/Merge ops pick shortcut + F (one pass, as the plain network's sum), the shortcut itself (no pass), or
      shortcut + T·F in the band; the gradient branches the same way: one pass less forward and one back per
      block (README, "Benchmarks").

    The gradient is written by hand (`_gated_sum_gradient`), attached the way tf.custom_gradient does it, to an
    IdentityN over the result and the inputs. tf.custom_gradient itself scans every variable of the graph on each
    call, which made building a 375-block network quadratic in its depth.
    """
    if branch_on is None:
        with tfv1.get_default_graph().gradient_override_map({"IdentityN": _GATED_SUM_GRADIENT}):
            out = shortcut - tf.math.multiply_no_nan(residual, -keep)
            return tf.identity_n([out, shortcut, residual, keep])[0]
    is_open, is_shut = branch_on
    (s_open, s_shut, s_band), (r_open, _, r_band) = (_three_ways(t, is_open, is_shut) for t in (shortcut, residual))
    out = _merge([tf.add(s_open, r_open), s_shut, s_band + keep * r_band])
    with tfv1.get_default_graph().gradient_override_map({"IdentityN": _GATED_SUM_BRANCH_GRADIENT}):
        return tf.identity_n([out, shortcut, residual, keep, is_open, is_shut])[0]


def _three_ways(t, is_open, is_shut):
    """(t if open, t if shut, t if in the band): raw Switch ops, of which only one output is computed on; they need
    no control-flow context, since nothing differentiates through them."""
    rest, when_open = tf.raw_ops.Switch(data=t, pred=is_open)
    in_band, when_shut = tf.raw_ops.Switch(data=rest, pred=is_shut)
    return when_open, when_shut, in_band


def _merge(branches):
    """The one branch that ran. Each must compute from its Switch outputs: Merge passes on the first input that
    arrives, and an op that reads none of them (a constant) would arrive on every branch."""
    return tf.raw_ops.Merge(inputs=branches).output


_GATED_SUM_GRADIENT = "EpsResNetGatedSum"
_GATED_SUM_BRANCH_GRADIENT = "EpsResNetGatedSumBranch"


@tf.RegisterGradient(_GATED_SUM_GRADIENT)
def _gated_sum_gradient(op, grad, *_unused_outputs):
    """TensorFlow's own gradient of the sum would be ~20 graph ops per block (broadcast reductions for the
    multiply and the subtraction); the gradient it computes is just this: the shortcut passes g, the residual gets
    keep·g (0 when shut), and keep has none (the paper's T is held constant). Nothing flows back through the
    forward ops of the sum (input 0)."""
    keep = op.inputs[3]
    return [None, grad, keep * grad, None]


@tf.RegisterGradient(_GATED_SUM_BRANCH_GRADIENT)
def _gated_sum_branch_gradient(op, grad, *_unused_outputs):
    """The same gradient, branching on the forward's predicates: g itself when open, zeros when shut (the raw
    ZerosLike reads g: tf.zeros_like of a known shape is a constant), keep·g in the band."""
    keep, is_open, is_shut = op.inputs[3], op.inputs[4], op.inputs[5]
    g_open, g_shut, g_band = _three_ways(grad, is_open, is_shut)
    return [None, grad, _merge([g_open, tf.raw_ops.ZerosLike(x=g_shut), keep * g_band]), None, None, None]


@layer_register(log_shape=False, use_scope=None)
def StrictIdentityGate(residual, epsilon, shortcut=None):
    """Gate a block's residual response; with `shortcut`, return shortcut + S(residual).

    `epsilon`: the tower's GateConstants (a network passes the same to every gate), or a float or scalar tensor.
    Called without a layer name inside a block's variable scope, it creates the named tensors
    `<block>/response_max` (per example, [batch]), `<block>/batch_response_max` (scalar),
    `<block>/keep` (T) and `<block>/is_discarded` (1.0 when the gate is closed).
    """
    c = epsilon if isinstance(epsilon, GateConstants) else GateConstants.of(epsilon, residual.dtype)
    per_example = response_max_per_example(residual, c, name="response_max")
    batch_max = tf.reduce_max(per_example, axis=c.batch_axis, name="batch_response_max")
    keep = _keep_factor(batch_max, c, name="keep")
    is_shut = tf.equal(keep, c.zero)
    tf.cast(is_shut, tf.float32, name="is_discarded")
    if shortcut is None:
        return keep * residual
    return gated_sum(shortcut, residual, keep, branch_on=(tf.equal(keep, c.one), is_shut) if c.branch else None)


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


def average_gate_statistics(plan):
    """The moving average of the gate statistics of `plan`'s gated blocks, averaged over the graph's training
    towers (one per GPU).

    Call it once, after every tower is built: tensorpack's trainers build the towers before the callbacks'
    graphs, so the GateAgreement callback calls it. Each block's averages (tags `is_discarded/<position>_<block>`
    and `batch_response_max/...`, Plan.block_tags) and `discarded_cnt` / `discarded_ratio` also go to the monitors
    (stats.json, TensorBoard). Returns the averaged vector.
    """
    graph = tfv1.get_default_graph()
    towers = graph.get_collection(_PER_TOWER)
    if not towers:
        raise ValueError("no gate statistics in this graph: build a gated model's training tower first")
    with graph.name_scope(None):
        per_step = towers[0] if len(towers) == 1 else tf.add_n(towers) / float(len(towers))
        names = plan.block_names_gated
        flag_tags, max_tags = plan.block_tags("is_discarded"), plan.block_tags("batch_response_max")
        tags = [flag_tags[n] for n in names] + [max_tags[n] for n in names]
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
