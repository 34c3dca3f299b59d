import dataclasses

import numpy as np
import pytest

from eps_resnet.gate import StrictIdentityGate, gated_sum, strict_identity, strict_identity_numpy
from eps_resnet.tfcompat import tf, tfv1
from tensorpack.tfutils.tower import TowerContext

EPS = 2.5


def run_gate(F, epsilon):
    with tf.Graph().as_default():
        x = tf.constant(F, tf.float32)
        out = strict_identity(x, epsilon)
        with tfv1.Session() as sess:
            return sess.run(out)


def straddling_tensors():
    rng = np.random.RandomState(0)
    below = rng.uniform(-EPS * 0.99, EPS * 0.99, size=(4, 5, 5, 3)).astype(np.float32)
    one_above = below.copy()
    one_above[3, 4, 4, 2] = EPS + 0.01          # a single element in the last image
    negative = below.copy()
    negative[0, 0, 0, 0] = -EPS - 0.5           # |F| above ε through a negative value
    big_batch = rng.uniform(-EPS * 0.9, EPS * 0.9, size=(512, 4, 4, 8)).astype(np.float32)
    big_batch_open = big_batch.copy()
    big_batch_open[511, 0, 0, 0] = 3 * EPS
    return {"all_below": below, "one_above": one_above, "negative": negative,
            "big_batch": big_batch, "big_batch_open": big_batch_open}


@pytest.mark.parametrize("case", sorted(straddling_tensors()))
def test_gate_matches_numpy_reference(case):
    F = straddling_tensors()[case]
    expected = strict_identity_numpy(F, EPS)
    got = run_gate(F, EPS)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    closed = case in ("all_below", "big_batch")
    assert (np.abs(got).max() == 0) == closed
    if not closed:
        np.testing.assert_array_equal(got, F)  # open: S(F) == F exactly, for every image of the batch


def test_epsilon_zero_keeps_the_gate_open():
    F = np.random.RandomState(1).normal(scale=1e-3, size=(3, 4, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(run_gate(F, 0.0), F)
    np.testing.assert_array_equal(strict_identity_numpy(F, 0.0), F.astype(np.float64))


def test_numpy_reference_decides_on_the_whole_batch():
    F = np.full((2, 3), 0.1)
    F[1, 2] = 5.0
    out = strict_identity_numpy(F, 1.0)
    np.testing.assert_array_equal(out, F)   # one element above ε keeps every image's response
    np.testing.assert_array_equal(strict_identity_numpy(np.full((2, 3), 0.1), 1.0), np.zeros((2, 3)))


def test_layer_exposes_named_statistics():
    F = straddling_tensors()["one_above"]
    with tf.Graph().as_default() as g, TowerContext("", is_training=False):
        with tfv1.variable_scope("res1.0"):
            out = StrictIdentityGate(tf.constant(F), EPS, shortcut=tf.zeros_like(tf.constant(F)))
        names = ["res1.0/response_max:0", "res1.0/is_discarded:0", "res1.0/batch_response_max:0"]
        with tfv1.Session() as sess:
            per_example, flag, batch_max, y = sess.run([g.get_tensor_by_name(n) for n in names] + [out])
    np.testing.assert_allclose(per_example, np.abs(F).reshape(4, -1).max(axis=1))
    assert per_example.shape == (4,)
    assert flag == 0.0 and batch_max == pytest.approx(EPS + 0.01)
    np.testing.assert_array_equal(y, F)


def test_gradient_through_the_gate():
    F0 = straddling_tensors()["one_above"]
    with tf.Graph().as_default():
        F = tf.constant(F0)
        eps = tf.compat.v1.placeholder(tf.float32, [])
        grad = tf.gradients(tf.reduce_sum(strict_identity(F, eps) * 3.0), F)[0]
        with tfv1.Session() as sess:
            np.testing.assert_array_equal(sess.run(grad, {eps: EPS}), np.full_like(F0, 3.0))
            np.testing.assert_array_equal(sess.run(grad, {eps: 100.0}), np.zeros_like(F0))


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("branch", [False, True], ids=["arithmetic", "branch"])
def test_gated_sum_is_bit_exact_when_the_gate_is_shut_or_open(branch):
    # the residual carries what a multiply by 0 would not survive: inf, NaN, and signed zeros on both sides
    shortcut = np.array([-0.0, 0.0, 1.5, -2.0, np.inf, 3.0], np.float32)
    residual = np.array([0.0, -0.0, np.inf, np.nan, 1.0, -1e-30], np.float32)
    with tf.Graph().as_default():
        keep = tfv1.placeholder(tf.float32, [])
        out = gated_sum(tf.constant(shortcut), tf.constant(residual), keep,
                        branch_on=(tf.equal(keep, 1.0), tf.equal(keep, 0.0)) if branch else None)
        with tfv1.Session() as sess:
            shut, half = sess.run(out, {keep: 0.0}), sess.run(out, {keep: 0.5})
            opened = sess.run(out, {keep: 1.0})
    np.testing.assert_array_equal(bits(shut), bits(shortcut))
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(bits(opened), bits(shortcut + residual))
        np.testing.assert_array_equal(half, shortcut + np.float32(0.5) * residual)


@pytest.mark.parametrize("branch", [False, True], ids=["arithmetic", "branch"])
def test_gated_sum_gradient_is_the_selects_own(branch):
    """The hand-written gradient of gated_sum equals TensorFlow's gradient of the same select, shut, open and in
    the band, and keep gets none."""
    rng = np.random.RandomState(5)
    shortcut, residual, upstream = (rng.normal(size=(3, 4, 4, 2)).astype(np.float32) for _ in range(3))
    with tf.Graph().as_default():
        keep = tfv1.placeholder(tf.float32, [])
        s, r = tf.constant(shortcut), tf.constant(residual)
        branch_on = (tf.equal(keep, 1.0), tf.equal(keep, 0.0)) if branch else None
        ours = tfv1.gradients(gated_sum(s, r, keep, branch_on), [s, r, keep], grad_ys=tf.constant(upstream))
        reference = tf.where(tf.equal(keep, 0.0), s, s + tf.stop_gradient(keep) * r)
        theirs = tfv1.gradients(reference, [s, r], grad_ys=tf.constant(upstream))
        assert ours[2] is None
        with tfv1.Session() as sess:
            for value in (0.0, 1.0, 0.25):
                a, b = sess.run([ours[:2], theirs], {keep: value})
                for x, y in zip(a, b):
                    np.testing.assert_array_equal(x, y)
            assert not sess.run(ours[1], {keep: 0.0}).any()


CONTROL_FLOW_OPS = {"If", "StatelessIf", "Switch", "Merge", "Enter", "Exit", "NextIteration", "While", "StatelessWhile"}


@pytest.mark.parametrize("on_gpu", [True, False], ids=["gpu", "cpu"])
def test_gated_network_branches_only_where_training_runs_on_a_cpu(on_gpu):
    """GPU towers (and XLA) sum arithmetically, without control flow or selects; CPU training towers branch with
    Switch/Merge and nothing else; inference graphs never branch (SavedModel, TFLite)."""
    from eps_resnet.inference import build_inference_graph
    from eps_resnet.model import EpsResNet
    from eps_resnet.plan import cifar_plan
    from eps_resnet.recipes import DIGITS_DEMO
    plan = cifar_plan(1, image_size=16)
    model = EpsResNet(plan, DIGITS_DEMO, on_gpu=on_gpu)
    assert model.branching_gates == (not on_gpu)
    assert not EpsResNet(plan, dataclasses.replace(DIGITS_DEMO, xla=True), on_gpu=False).branching_gates
    model.data_format = "NHWC"  # the GPU tower's gates, laid out so that this CPU can build and run them
    with tf.Graph().as_default() as graph:
        image, label = tfv1.placeholder(tf.uint8, [None, 16, 16, 3]), tfv1.placeholder(tf.int32, [None])
        with TowerContext("", is_training=True):
            cost = model.build_graph(image, label)
        model.optimizer().minimize(cost)
        types = {op.type for op in graph.get_operations()}
        reads = [op.name for op in graph.get_operations() if op.type == "ReadVariableOp"
                 and op.inputs[0].op.name == "epsilon" and not op.name.startswith("epsilon/")]
    assert not types & {"Select", "SelectV2"}
    if on_gpu:
        assert "MulNoNan" in types and not types & CONTROL_FLOW_OPS
    else:
        assert types & CONTROL_FLOW_OPS == {"Switch", "Merge"}
    assert sorted(reads) == ["epsilon-summary/ReadVariableOp", "epsilon_value/ReadVariableOp"]  # not one per gate
    inference = build_inference_graph(cifar_plan(1, image_size=16), epsilon=EPS)
    assert not {op.type for op in inference.graph.get_operations()} & CONTROL_FLOW_OPS


def test_export_compares_only_batches_where_every_kept_gate_was_open():
    """A kept block whose gate shut on one calibration batch (every image there below ε): the images of that batch
    are left out of the exact comparison; a removed block does not count, nor does a plain run."""
    from eps_resnet.prune import kept_gates_closed
    eps = 1.0
    maxima = {"flicker": np.array([0.5] * 64 + [0.2] * 63 + [3.0] + [0.1] * 10),  # shut on batch 0 and batch 2
              "open": np.full(138, 5.0), "removed": np.full(138, 0.1)}
    agree, shut = kept_gates_closed(138, maxima, eps, discarded=["removed"])
    assert shut == {"flicker": 2}
    np.testing.assert_array_equal(agree, [False] * 64 + [True] * 64 + [False] * 10)
    agree, shut = kept_gates_closed(138, maxima, eps, discarded=["removed", "flicker"])
    assert agree.all() and shut == {}
    agree, shut = kept_gates_closed(5, {}, None, discarded=[])
    assert agree.all() and len(agree) == 5 and shut == {}
