"""The pre-activation ResNet of a block plan as one function (paper Sec. 3, Fig. 4): image in; logits, side
logits and the gates out. Training's ModelDesc (model.py), the inference graphs (inference.py) and BatchNorm
re-estimation (precise_bn.py) all build the network here.

Inputs are raw uint8 images; the preprocessing is in the graph (CIFAR-style: subtract the per-pixel mean image,
divide by 128; ImageNet: scale to [0, 1], normalise by channel mean/std). The mean image and the channel
statistics are non-trainable variables stored in every checkpoint, so an export needs nothing but the checkpoint.
A plan whose blocks have `residual=False` builds the reduced network (shortcut path only), so a checkpoint of the
full network restores into it by name.
"""
import contextlib
from typing import Callable, Optional, Sequence

import numpy as np

from .gate import GateConstants, StrictIdentityGate
from .layers import bn_relu, conv2d
from .plan import CIFAR_STYLE, PREACT_BOTH, PREACT_NONE, SHORTCUT_CONV, SHORTCUT_POOL_PAD, Plan
from .tfcompat import tf, tfv1
from .tfgraph import shared_scalar_variable, shared_variable

from tensorpack.models import AvgPooling, FullyConnected, GlobalAvgPooling, MaxPooling
from tensorpack.tfutils.argscope import argscope

DATA_FORMATS = {"NHWC": "channels_last", "NCHW": "channels_first"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


REDUCED_KEEP = "reduced_network_keep"


def reduced_network_keep(gated_blocks: int):
    """The graph's flags of the network an export would keep, one per gated block (validation builds it:
    model.EpsResNet.validation_tower_func; gate_callbacks.GateAgreement sets them each epoch): a local variable,
    so never in a checkpoint; all True until set."""
    graph = tfv1.get_default_graph()
    found = graph.get_collection(REDUCED_KEEP)
    if found:
        return found[0]
    with graph.name_scope(None), tfv1.variable_scope(tfv1.VariableScope(reuse=False, name="")):
        var = tfv1.get_variable(REDUCED_KEEP, shape=[gated_blocks], dtype=tf.bool, initializer=tfv1.ones_initializer(),
                                trainable=False, collections=[tfv1.GraphKeys.LOCAL_VARIABLES], use_resource=True)
    graph.add_to_collection(REDUCED_KEEP, var)
    return var


def gate_constants(epsilon: float, branch: bool = False) -> GateConstants:
    """The gates' constants of one tower, reading the graph's ε variable (created at `epsilon` if new) once."""
    value = shared_scalar_variable("epsilon", epsilon)
    return GateConstants.of(tf.identity(value, name="epsilon_value"), branch=branch)


def forward(plan: Plan, image, data_format: str = "NHWC", gates: Optional[GateConstants] = None,
            keep: Optional[Sequence] = None, side: bool = False, mean_image: Optional[np.ndarray] = None,
            channel_stats=(IMAGENET_MEAN, IMAGENET_STD), on_gated_residual: Optional[Callable] = None):
    """(logits, side logits or None, per gated block (is_discarded, batch_response_max)).

    `gates`: the strict-identity gate on every block with a residual branch (ε-ResNet), or None (plain);
    `keep`: per such block a scalar bool tensor, the network an export keeps (no gates; a block flagged False is
    its shortcut and never computes its residual branch); `side`: the side head after `plan.side_block`;
    `mean_image`, `channel_stats`: the preprocessing variables' initial values; `on_gated_residual(block name,
    residual)`: called for each gated block (training's summaries)."""
    keep = iter(keep) if keep is not None else None
    x = _preprocess(plan, image, data_format, mean_image, channel_stats)
    side_logits = None
    block_gates = []
    with argscope([AvgPooling, MaxPooling, GlobalAvgPooling], data_format=DATA_FORMATS[data_format]):
        if plan.style == CIFAR_STYLE:
            x = conv2d("conv0", x, plan.stem_channels, 3, 1, data_format, then_bn_relu=True)
        else:
            x = conv2d("conv0", x, plan.stem_channels, 7, 2, data_format, then_bn_relu=True)
            x = MaxPooling("pool0", x, 3, strides=2, padding="SAME")
        for block in plan.blocks:
            x = _block(x, block, data_format, gates, block_gates, next(keep) if keep and block.residual else None,
                       on_gated_residual)
            if side and block.name == plan.side_block:
                side_logits = _head(plan, x, data_format, "side")
        logits = _head(plan, x, data_format)
    return logits, side_logits, block_gates


def _preprocess(plan: Plan, image, data_format, mean_image, channel_stats):
    with tf.name_scope("preprocess"):
        x = tf.cast(image, tf.float32)
        if plan.style == CIFAR_STYLE:
            size = plan.image_size
            initial = np.zeros((size, size, 3), np.float32) if mean_image is None else mean_image
            x = (x - shared_variable("mean_image", np.asarray(initial, np.float32))) * (1.0 / 128)
        else:
            # variables, so that the checkpoint (and the export) carries the run's choice
            mean = shared_variable("channel_mean", np.asarray(channel_stats[0], np.float32))
            std = shared_variable("channel_std", np.asarray(channel_stats[1], np.float32))
            x = (x * (1.0 / 255) - mean) / std
        if data_format == "NCHW":
            x = tf.transpose(x, [0, 3, 1, 2])
    return x


def _block(x, block, data_format, gates, block_gates, keep=None, on_gated_residual=None):
    channel_axis = 1 if data_format == "NCHW" else 3
    with tfv1.variable_scope(block.name):
        # What feeds the shortcut and the residual branch (paper Fig. 4(a), pre-activation handling).
        if block.preact == PREACT_NONE:
            shortcut_in = residual_in = x
        elif block.preact == PREACT_BOTH:
            shortcut_in = residual_in = bn_relu("preact", x, data_format)
        else:
            shortcut_in = x
            residual_in = bn_relu("preact", x, data_format) if block.residual else None

        if block.shortcut == SHORTCUT_POOL_PAD:
            shortcut = AvgPooling("pool", shortcut_in, 2)
            paddings = [[0, 0], [0, 0], [0, 0], [0, 0]]
            paddings[channel_axis] = list(block.padding)
            shortcut = tf.pad(shortcut, paddings)
        elif block.shortcut == SHORTCUT_CONV:
            shortcut = conv2d("convshortcut", shortcut_in, block.out_channels, 1, block.stride, data_format)
        else:
            shortcut = shortcut_in
        if not block.residual:
            return tf.identity(shortcut, name="output")
        if keep is not None:  # raw Switch ops: the residual branch of a removed block is never computed
            residual_in = tf.raw_ops.Switch(data=residual_in, pred=keep).output_true
            shortcut_removed, shortcut = tf.raw_ops.Switch(data=shortcut, pred=keep)

        def stride(k):
            return block.stride if k == block.stride_at else 1
        if block.kind == "basic":
            (m,) = block.inner_channels
            r = conv2d("conv1", residual_in, m, 3, stride(1), data_format, then_bn_relu=True)
            r = conv2d("conv2", r, block.out_channels, 3, stride(2), data_format)
        else:
            m1, m2 = block.inner_channels
            r = conv2d("conv1", residual_in, m1, 1, stride(1), data_format, then_bn_relu=True)
            r = conv2d("conv2", r, m2, 3, stride(2), data_format, then_bn_relu=True)
            r = conv2d("conv3", r, block.out_channels, 1, 1, data_format)
        if keep is not None:
            return tf.identity(tf.raw_ops.Merge(inputs=[shortcut_removed, tf.add(shortcut, r)]).output,
                               name="output")
        if gates is None:
            return tf.add(shortcut, r, name="output")
        out = StrictIdentityGate(r, gates, shortcut=shortcut)
        graph, scope = tfv1.get_default_graph(), tfv1.get_default_graph().get_name_scope()
        block_gates.append((graph.get_tensor_by_name(scope + "/is_discarded:0"),
                            graph.get_tensor_by_name(scope + "/batch_response_max:0")))
        if on_gated_residual is not None:
            on_gated_residual(block.name, r)
        return tf.identity(out, name="output")


def _head(plan: Plan, x, data_format, scope=""):
    """BN+ReLU, global average pooling, fully connected: `logits`, or `side_logits` for scope "side"."""
    with tfv1.variable_scope(scope) if scope else contextlib.nullcontext():
        x = bn_relu("bnlast", x, data_format)
        x = GlobalAvgPooling("gap", x)
        logits = FullyConnected("linear", x, plan.num_classes)
    return tf.identity(logits, name=scope + "_logits" if scope else "logits")
