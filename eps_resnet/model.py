"""ε-ResNet and plain pre-activation ResNet graphs, built from a block plan (paper Sec. 3, Fig. 4).

One ModelDesc serves both network styles and both variants:
- `epsilon` a float: every block with a residual branch is gated (ε-ResNet);
- `epsilon=None`: the plain pre-activation ResNet baseline, with the same variable names.
A plan whose blocks have `residual=False` builds the reduced network (shortcut path only), so a
checkpoint of the full network restores into it by name.

Inputs are raw uint8 images; the preprocessing is in the graph (CIFAR-style: subtract the per-pixel
mean image, divide by 128; ImageNet: scale to [0, 1], normalise by channel mean/std). The mean image is
a non-trainable variable stored in every checkpoint, so an export needs nothing but the checkpoint.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import UserError
from .gate import GateConstants, StrictIdentityGate, add_tower_gate_statistics
from .layers import bn_relu, conv2d
from .plan import (CIFAR_STYLE, PREACT_BOTH, PREACT_NONE, SHORTCUT_CONV, SHORTCUT_POOL_PAD, Plan)
from .tfcompat import tf, tfv1
from .tfgraph import shared_scalar_variable, shared_variable

from tensorpack import ModelDesc
from tensorpack.models import AvgPooling, FullyConnected, GlobalAvgPooling, MaxPooling, regularize_cost
from tensorpack.tfutils.argscope import argscope
from tensorpack.tfutils.summary import add_moving_summary
from tensorpack.tfutils.tower import TowerFunc, get_current_tower_context

DATA_FORMATS = {"NHWC": "channels_last", "NCHW": "channels_first"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REDUCED_KEEP = "reduced_network_keep"


def reduced_network_keep(gated_blocks: int):
    """The graph's `reduced_network_keep` flags (see EpsResNet.reduced_tower_func): a local variable, so never in a
    checkpoint; all True until set."""
    graph = tfv1.get_default_graph()
    found = graph.get_collection(REDUCED_KEEP)
    if found:
        return found[0]
    with graph.name_scope(None), tfv1.variable_scope(tfv1.VariableScope(reuse=False, name="")):
        var = tfv1.get_variable(REDUCED_KEEP, shape=[gated_blocks], dtype=tf.bool, initializer=tfv1.ones_initializer(),
                                trainable=False, collections=[tfv1.GraphKeys.LOCAL_VARIABLES], use_resource=True)
    graph.add_to_collection(REDUCED_KEEP, var)
    return var


def imagenet_normalisation(aug: str = "intended"):
    """(mean, std) per RGB input channel, for pixels scaled to [0, 1].

    released: the released code fed BGR images but normalised them with these RGB-ordered constants, so its blue
    channel got the red mean and std. On our RGB images the same numbers are the reversed constants; the first
    convolution then sees the channels in RGB instead of BGR order, which only permutes its input weights.
    """
    if aug == "released":
        return IMAGENET_MEAN[::-1], IMAGENET_STD[::-1]
    return IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ModelSettings:
    """Everything besides the plan that shapes the graph and the optimiser (paper Sec. 3, side supervision; Sec. 4, training)."""
    epsilon: Optional[float] = 2.5          # None: plain ResNet, no gates
    side_weight: float = 0.1                # 0: no side supervision
    weight_decay: float = 2e-4
    weight_decay_every: Optional[int] = 480000  # CIFAR/SVHN: ×0.2 every this many steps; None: constant
    weight_decay_factor: float = 0.2
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    data_format: str = "NHWC"
    histogram_blocks: int = 16              # blocks whose kernels get TensorBoard histograms, evenly spaced
    branching_gates: bool = False           # training towers sum gated blocks by Switch/Merge (CPU; gate.gated_sum)
    seed: Optional[int] = None              # graph-level TensorFlow seed (initialisers), for reproducible runs
    channel_penalty: float = 0.0            # > 0: channel pruning's regulariser (eps_resnet.channels) times this
    channel_variance: float = 1.0           # weight of its variance-aware term against the cross-layer term

    def validate(self):
        if self.epsilon is not None and not self.epsilon >= 0:
            raise UserError("epsilon must be >= 0 (or None for a plain ResNet), got %r" % (self.epsilon,))
        if self.data_format not in DATA_FORMATS:
            raise UserError("unsupported data format %r; choose NHWC (CPU) or NCHW (GPU)" % (self.data_format,))
        if self.histogram_blocks < 0:
            raise UserError("--histogram-blocks must be >= 0, got %r" % (self.histogram_blocks,))
        if self.side_weight < 0:
            raise UserError("side supervision weight must be >= 0, got %r" % (self.side_weight,))
        if not (self.channel_penalty >= 0 and self.channel_variance >= 0):
            raise UserError("--channel-penalty and --channel-variance must be >= 0, got %r and %r"
                            % (self.channel_penalty, self.channel_variance))
        return self


class EpsResNet(ModelDesc):
    """A pre-activation ResNet built from `plan`, gated when `settings.epsilon` is not None."""

    def __init__(self, plan: Plan, settings: ModelSettings = ModelSettings(), mean_image=None,
                 channel_stats=(IMAGENET_MEAN, IMAGENET_STD)):
        self.plan = plan
        self.settings = settings.validate()
        self.gated = settings.epsilon is not None
        self.side = settings.side_weight > 0 and plan.side_block is not None
        self.data_format = DATA_FORMATS[settings.data_format]
        size = plan.image_size
        if mean_image is None:
            mean_image = np.zeros((size, size, 3), np.float32)
        mean_image = np.asarray(mean_image, np.float32)
        if mean_image.shape != (size, size, 3):
            raise UserError("mean image has shape %s, the plan expects %s" % (mean_image.shape, (size, size, 3)))
        self.mean_image = mean_image
        self.channel_stats = channel_stats  # ImageNet: (mean, std), see imagenet_normalisation

    # ---- tensorpack interface -----------------------------------------------------------------
    def inputs(self):
        s = self.plan.image_size
        return [tf.TensorSpec([None, s, s, 3], tf.uint8, "image"),
                tf.TensorSpec([None], tf.int32, "label")]

    def build_graph(self, image, label):
        ctx = get_current_tower_context()
        if self.settings.seed is not None:
            # here, not before training: tensorpack leaves eager mode only when it builds the training graph
            tfv1.set_random_seed(self.settings.seed)
        logits, side_logits, gates = self.forward(image)
        cost = self._classification_losses(logits, label, "")
        if side_logits is not None:
            side_cost = self._classification_losses(side_logits, label, "side_")
        if self.gated:
            self._gate_statistics(gates)
        if not ctx.is_training:
            return None

        total = cost
        if side_logits is not None:
            total = total + self.settings.side_weight * side_cost
        wd = self._weight_decay()
        # wd · Σ l2(W): one multiply, not one per kernel (and the kernels' gradients are bit for bit the same)
        wd_cost = tf.multiply(regularize_cost(".*/W", tf.nn.l2_loss, name="l2_sum"), wd, name="wd_cost")
        terms = [total, wd_cost]
        if self.settings.channel_penalty > 0:
            terms.append(self._channel_cost(gates))
        total = tf.add_n(terms, name="cost")
        add_moving_summary(cost, wd_cost, total, tf.identity(wd, name="weight_decay"))
        self._weight_histograms()
        return total

    def optimizer(self):
        lr = shared_scalar_variable("learning_rate", self.settings.learning_rate)
        tfv1.summary.scalar("learning_rate-summary", lr)
        return tfv1.train.MomentumOptimizer(lr, self.settings.momentum, use_nesterov=self.settings.nesterov)

    # ---- the network --------------------------------------------------------------------------
    def validation_tower_func(self) -> TowerFunc:
        """The tower the validation runners build: the model's own graph and, for a gated model, beside it under
        `reduced/` the network an export would keep as of the `reduced_network_keep` flags (a local variable, one
        per gated block in plan order, set by GateAgreement each epoch): blocks flagged False pass their shortcut
        and never compute their residual branch, the others add theirs ungated. Both read the same batch. The
        reduced network's error is what the export scores with training's BatchNorm statistics."""
        def build(image, label):
            self.build_graph(image, label)
            if self.gated:
                keep = reduced_network_keep(len(self.plan.block_names_gated))
                # the same variables, in a name scope inside this tower's (tower1/reduced/... on a second GPU)
                with tfv1.variable_scope(tfv1.get_variable_scope(), reuse=True, auxiliary_name_scope=False), \
                        tf.name_scope("reduced"):
                    logits, _, _ = self.forward(image, keep=tf.unstack(keep, num=keep.shape[0]))
                    self._classification_losses(logits, label, "")
        return TowerFunc(build, self.get_input_signature())

    def forward(self, image, keep=None):
        """Main logits, side-head logits (None without side supervision), and per gated block its
        (is_discarded, batch_response_max) tensors; with `keep` (per gated block a scalar bool tensor), the
        network an export keeps: no gates, blocks flagged False reduced to their shortcut."""
        plan = self.plan
        keep = iter(keep) if keep is not None else None
        epsilon = None
        if self.gated and keep is None:  # read once per tower: every gate uses this value (one copy to the device)
            epsilon = GateConstants.of(
                tf.identity(shared_scalar_variable("epsilon", self.settings.epsilon), name="epsilon_value"),
                branch=self.settings.branching_gates and get_current_tower_context().is_training)
        x = self._preprocess(image)
        side_logits = None
        gates = []
        with argscope([AvgPooling, MaxPooling, GlobalAvgPooling], data_format=self.data_format):
            if plan.style == CIFAR_STYLE:
                x = self._conv("conv0", x, plan.stem_channels, 3, then_bn_relu=True)
            else:
                x = self._conv("conv0", x, plan.stem_channels, 7, strides=2, then_bn_relu=True)
                x = MaxPooling("pool0", x, 3, strides=2, padding="SAME")
            for block in plan.blocks:
                x = self._block(x, block, epsilon, gates, next(keep) if keep and block.residual else None)
                if self.side and block.name == plan.side_block:
                    side_logits = self._head(x, "side")
            logits = self._head(x)
        return logits, side_logits, gates

    def _preprocess(self, image):
        with tf.name_scope("preprocess"):
            x = tf.cast(image, tf.float32)
            if self.plan.style == CIFAR_STYLE:
                mean = shared_variable("mean_image", self.mean_image)
                x = (x - mean) * (1.0 / 128)
            else:
                # variables, so that the checkpoint (and the export) carries the run's choice
                mean = shared_variable("channel_mean", np.asarray(self.channel_stats[0], np.float32))
                std = shared_variable("channel_std", np.asarray(self.channel_stats[1], np.float32))
                x = (x * (1.0 / 255) - mean) / std
            if self.data_format == "channels_first":
                x = tf.transpose(x, [0, 3, 1, 2])
        return x

    def _block(self, x, block, epsilon, gates, keep=None):
        channel_axis = 1 if self.data_format == "channels_first" else 3
        with tfv1.variable_scope(block.name):
            # What feeds the shortcut and the residual branch (paper Fig. 4(a), pre-activation handling).
            if block.preact == PREACT_NONE:
                shortcut_in = residual_in = x
            elif block.preact == PREACT_BOTH:
                shortcut_in = residual_in = bn_relu("preact", x, self.settings.data_format)
            else:
                shortcut_in = x
                residual_in = bn_relu("preact", x, self.settings.data_format) if block.residual else None

            if block.shortcut == SHORTCUT_POOL_PAD:
                shortcut = AvgPooling("pool", shortcut_in, 2)
                paddings = [[0, 0], [0, 0], [0, 0], [0, 0]]
                paddings[channel_axis] = list(block.padding)
                shortcut = tf.pad(shortcut, paddings)
            elif block.shortcut == SHORTCUT_CONV:
                shortcut = self._conv("convshortcut", shortcut_in, block.out_channels, 1, strides=block.stride)
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
                r = self._conv("conv1", residual_in, m, 3, strides=stride(1), then_bn_relu=True)
                r = self._conv("conv2", r, block.out_channels, 3, strides=stride(2))
            else:
                m1, m2 = block.inner_channels
                r = self._conv("conv1", residual_in, m1, 1, strides=stride(1), then_bn_relu=True)
                r = self._conv("conv2", r, m2, 3, strides=stride(2), then_bn_relu=True)
                r = self._conv("conv3", r, block.out_channels, 1)
            if keep is not None:
                return tf.identity(tf.raw_ops.Merge(inputs=[shortcut_removed, tf.add(shortcut, r)]).output,
                                   name="output")
            if epsilon is None:
                return tf.add(shortcut, r, name="output")
            out = StrictIdentityGate(r, epsilon, shortcut=shortcut)
            graph, scope = tfv1.get_default_graph(), tfv1.get_default_graph().get_name_scope()
            gates.append((graph.get_tensor_by_name(scope + "/is_discarded:0"),
                          graph.get_tensor_by_name(scope + "/batch_response_max:0")))
            self._response_mean_summary(r, block.name)
            return tf.identity(out, name="output")

    def _conv(self, name, x, out_channels, kernel, strides=1, then_bn_relu=False):
        return conv2d(name, x, out_channels, kernel, strides, self.settings.data_format, then_bn_relu)

    def _head(self, x, scope=""):
        """BN+ReLU, global average pooling, fully connected: `logits`, or `side_logits` for scope "side"."""
        with tfv1.variable_scope(scope) if scope else contextlib.nullcontext():
            x = bn_relu("bnlast", x, self.settings.data_format)
            x = GlobalAvgPooling("gap", x)
            logits = FullyConnected("linear", x, self.plan.num_classes)
        return tf.identity(logits, name=scope + "_logits" if scope else "logits")

    # ---- losses and statistics ----------------------------------------------------------------
    def _classification_losses(self, logits, label, prefix):
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label, logits=logits)
        cost = tf.reduce_mean(ce, name=prefix + "cross_entropy_loss")
        wrong = tf.cast(tf.logical_not(tf.nn.in_top_k(predictions=logits, targets=label, k=1)), tf.float32,
                        name=prefix + "incorrect_vector")
        add_moving_summary(tf.reduce_mean(wrong, name=prefix + "train_error"))
        if self.plan.style != CIFAR_STYLE and not prefix:
            wrong5 = tf.cast(tf.logical_not(tf.nn.in_top_k(predictions=logits, targets=label, k=5)), tf.float32,
                             name="incorrect_top5")
            add_moving_summary(tf.reduce_mean(wrong5, name="train_error_top5"))
        return cost

    def _gate_statistics(self, gates):
        """Per training tower, the gates' statistics (averaged over towers by gate.average_gate_statistics)."""
        if get_current_tower_context().is_training:
            add_tower_gate_statistics(gates)
        eps = shared_scalar_variable("epsilon", self.settings.epsilon)
        if get_current_tower_context().is_main_training_tower:
            tfv1.summary.scalar("epsilon-summary", eps)

    def _response_mean_summary(self, residual, block):
        # mean|F| is only computed when summaries are written (not every step): it is a full-tensor pass.
        if get_current_tower_context().is_main_training_tower:
            mean = tf.reduce_mean(tf.abs(residual))
            with tfv1.get_default_graph().name_scope(None):  # the tag is exactly the plan's (network order)
                tfv1.summary.scalar(self.plan.block_tags("response_mean")[block], mean)

    def _weight_histograms(self):
        """Kernel histograms, as the released code wrote, but of the stem, the heads and `histogram_blocks` blocks
        evenly spaced along the depth: one per kernel of the 752-layer network wrote about 2.1 MB an epoch."""
        if not get_current_tower_context().is_main_training_tower:
            return
        variables = {v.op.name: v for v in tfv1.trainable_variables()}
        tags = self.plan.block_tags("weights")
        chosen = {"weights/" + name[:-2]: name for name in ("conv0/W", "linear/W", "side/linear/W")}
        for block in self.plan.evenly_spaced_blocks(self.settings.histogram_blocks):
            for kernel in block.residual_kernels:  # res1.7/conv1/W -> weights/007_res1.7/conv1
                chosen[tags[block.name] + kernel[len(block.name):-2]] = kernel
        with tfv1.get_default_graph().name_scope(None):
            for tag, name in chosen.items():
                if name in variables:
                    tfv1.summary.histogram(tag, variables[name])

    def _channel_cost(self, gates):
        """Channel pruning's regulariser over this tower's kernels, counting only blocks whose gate is open."""
        from .channels import channel_groups, penalty_tensor
        ctx = get_current_tower_context()
        # replicated towers own their variables (tower1/conv0/W ...): penalise this tower's, as regularize_cost does
        own = ctx.get_collection_in_tower(tfv1.GraphKeys.TRAINABLE_VARIABLES) if ctx.has_own_variables \
            else tfv1.trainable_variables()
        prefix = ctx.vs_name + "/" if ctx.has_own_variables and ctx.vs_name else ""
        kernels = {v.op.name[len(prefix):]: v for v in own if v.op.name.endswith("/W")}
        block_open = {name: tf.stop_gradient(1.0 - is_discarded)
                      for name, (is_discarded, _) in zip(self.plan.block_names_gated, gates)}
        with tf.name_scope("channels"):
            regulariser, cross, aware = penalty_tensor(channel_groups(self.plan), kernels, block_open,
                                                       self.settings.channel_variance)
            cost = tf.multiply(regulariser, self.settings.channel_penalty, name="channel_cost")
        add_moving_summary(cost, cross, aware)
        return cost

    def _weight_decay(self):
        s = self.settings
        if s.weight_decay_every:
            step = tfv1.train.get_or_create_global_step()
            return tfv1.train.exponential_decay(s.weight_decay, step, s.weight_decay_every,
                                                s.weight_decay_factor, staircase=True)
        return tf.constant(s.weight_decay, tf.float32)
