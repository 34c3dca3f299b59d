"""Our thin convolution and BatchNorm+ReLU against tensorpack's own Conv2D(activation=BNReLU): the same variables
under the same names and collections, the same outputs in training and inference, the same moving averages."""
import numpy as np
import pytest

from eps_resnet.layers import conv2d
from eps_resnet.tfcompat import tf, tfv1
from tensorpack.models import BNReLU, Conv2D
from tensorpack.tfutils.tower import TowerContext

RNG = np.random.RandomState(3)


def build_both(x, is_training, strides):
    """(tensorpack's output, ours) for one conv+BN+ReLU layer each, under scopes 'tp' and 'ours'."""
    with TowerContext("", is_training=is_training), \
            tfv1.variable_scope(tfv1.get_variable_scope(), reuse=tfv1.AUTO_REUSE):
        with tfv1.variable_scope("tp"):
            theirs = Conv2D("c", x, 6, 3, strides=strides, use_bias=False, activation=BNReLU)
        with tfv1.variable_scope("ours"):
            ours = conv2d("c", x, 6, 3, strides=strides, then_bn_relu=True)
    return theirs, ours


def names(collection, prefix):
    return sorted(v.op.name[len(prefix):] for v in tfv1.get_collection(collection) if v.op.name.startswith(prefix))


@pytest.mark.parametrize("strides", [1, 2])
def test_conv_bn_relu_matches_tensorpack(strides):
    x_value = RNG.normal(size=(5, 9, 9, 4)).astype(np.float32)
    with tf.Graph().as_default():
        x = tfv1.placeholder(tf.float32, [None, 9, 9, 4])
        train_tp, train_ours = build_both(x, True, strides)
        updates = tfv1.get_collection(tfv1.GraphKeys.UPDATE_OPS)
        infer_tp, infer_ours = build_both(x, False, strides)

        for collection in (tfv1.GraphKeys.GLOBAL_VARIABLES, tfv1.GraphKeys.TRAINABLE_VARIABLES):
            assert names(collection, "tp/") == names(collection, "ours/")
        assert names(tfv1.GraphKeys.GLOBAL_VARIABLES, "ours/") == \
            ["c/W", "c/bn/beta", "c/bn/gamma", "c/bn/mean/EMA", "c/bn/variance/EMA"]
        # where tensorpack's own BatchNorm puts the moving statistics (its tf-keras path misses them on TF 2)
        assert names(tfv1.GraphKeys.MODEL_VARIABLES, "ours/") == ["c/bn/mean/EMA", "c/bn/variance/EMA"]
        assert len(updates) == 4  # moving mean and variance, for each of the two layers
        with tfv1.Session() as sess:
            # the same random values in both layers' variables (moving statistics too, so inference differs
            # from training)
            variables = {v.op.name: v for v in tfv1.global_variables()}
            for name in names(tfv1.GraphKeys.GLOBAL_VARIABLES, "ours/"):
                value = RNG.uniform(0.5, 1.5, size=variables["ours/" + name].shape).astype(np.float32)
                variables["tp/" + name].load(value, sess)
                variables["ours/" + name].load(value, sess)
            a, b = sess.run([train_tp, train_ours], {x: x_value})
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
            assert a.shape == ((5, 9, 9, 6) if strides == 1 else (5, 5, 5, 6))
            sess.run(updates, {x: x_value})
            for stat in ("mean/EMA", "variance/EMA"):
                tp_stat, our_stat = sess.run([variables["tp/c/bn/" + stat], variables["ours/c/bn/" + stat]])
                np.testing.assert_allclose(tp_stat, our_stat, rtol=1e-5, atol=1e-6)
            a, b = sess.run([infer_tp, infer_ours], {x: x_value})
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
