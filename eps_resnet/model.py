"""Training's ModelDesc: the network of a block plan (network.forward) with its inputs, losses, statistics and
optimiser (paper Sec. 3 and 4).

One ModelDesc serves both network styles and both variants, and takes every setting from the run's recipe:
- the recipe's `epsilon` a float: every block with a residual branch is gated (ε-ResNet);
- `epsilon=None` (--plain): the plain pre-activation ResNet baseline, with the same variable names.
Learning rate, ε and weight decay are shared variables that callbacks set each epoch (eps_resnet.hyperparams).
The loss adds each pruning method's training cost (eps_resnet.methods), and validation also scores the network
an export would keep (validation_tower_func).
"""
import numpy as np

from . import UserError
from . import network
from .gate import add_tower_gate_statistics
from .methods import training_methods
from .network import IMAGENET_MEAN, IMAGENET_STD, gate_constants, reduced_network_keep
from .plan import CIFAR_STYLE, Plan
from .recipes import Recipe
from .tfcompat import tf, tfv1
from .tfgraph import shared_scalar_variable

from tensorpack import ModelDesc
from tensorpack.models import regularize_cost
from tensorpack.tfutils.summary import add_moving_summary
from tensorpack.tfutils.tower import TowerFunc, get_current_tower_context

def imagenet_normalisation(aug: str = "intended"):
    """(mean, std) per RGB input channel, for pixels scaled to [0, 1].

    released: the released code fed BGR images but normalised them with these RGB-ordered constants, so its blue
    channel got the red mean and std. On our RGB images the same numbers are the reversed constants; the first
    convolution then sees the channels in RGB instead of BGR order, which only permutes its input weights.
    """
    if aug == "released":
        return IMAGENET_MEAN[::-1], IMAGENET_STD[::-1]
    return IMAGENET_MEAN, IMAGENET_STD


class EpsResNet(ModelDesc):
    """A pre-activation ResNet built from `plan` as `recipe` trains it (its ε, or none: plain; side supervision,
    initial learning rate and weight decay, momentum, seed, pruning methods), laid out for GPUs (NCHW) or a CPU
    (NHWC, gates summed by branching unless XLA compiles the graph)."""

    def __init__(self, plan: Plan, recipe: Recipe, on_gpu: bool = False, mean_image=None,
                 channel_stats=(IMAGENET_MEAN, IMAGENET_STD)):
        self.plan = plan
        self.recipe = recipe.validate()
        self.gated = not recipe.plain
        self.methods = training_methods(recipe)
        self.side = recipe.side_weight > 0 and plan.side_block is not None
        self.data_format = "NCHW" if on_gpu else "NHWC"
        self.branching_gates = not on_gpu and not recipe.xla  # training towers sum gated blocks by Switch/Merge
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
        if self.recipe.seed is not None:
            # here, not before training: tensorpack leaves eager mode only when it builds the training graph
            tfv1.set_random_seed(self.recipe.seed)
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
            total = total + self.recipe.side_weight * side_cost
        wd = shared_scalar_variable("weight_decay", self.recipe.weight_decay)  # hyperparams.PolicySetter sets it
        # wd · Σ l2(W): one multiply, not one per kernel (and the kernels' gradients are bit for bit the same)
        wd_cost = tf.multiply(regularize_cost(".*/W", tf.nn.l2_loss, name="l2_sum"), wd, name="wd_cost")
        terms = [total, wd_cost] + [cost for cost in (m.training_cost(self, gates) for m in self.methods)
                                    if cost is not None]
        total = tf.add_n(terms, name="cost")
        add_moving_summary(cost, wd_cost, total)
        tfv1.summary.scalar("weight_decay-summary", wd)
        self._weight_histograms()
        return total

    def optimizer(self):
        lr = shared_scalar_variable("learning_rate", self.recipe.standard_lr[0][1])
        tfv1.summary.scalar("learning_rate-summary", lr)
        return tfv1.train.MomentumOptimizer(lr, self.recipe.momentum, use_nesterov=self.recipe.nesterov)

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
        """network.forward with this model's settings: gated (ε-ResNet) unless plain or `keep` is given (the
        network an export keeps, see validation_tower_func)."""
        gates = None
        if self.gated and keep is None:  # read once per tower: every gate uses this value (one copy to the device)
            gates = gate_constants(self.recipe.epsilon,
                                   branch=self.branching_gates and get_current_tower_context().is_training)
        return network.forward(self.plan, image, self.data_format, gates, keep, self.side, self.mean_image,
                               self.channel_stats, on_gated_residual=self._response_mean_summary)

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
        eps = shared_scalar_variable("epsilon", self.recipe.epsilon)
        if get_current_tower_context().is_main_training_tower:
            tfv1.summary.scalar("epsilon-summary", eps)

    def _response_mean_summary(self, block, residual):
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
        for block in self.plan.evenly_spaced_blocks(self.recipe.histogram_blocks):
            for kernel in block.residual_kernels:  # res1.7/conv1/W -> weights/007_res1.7/conv1
                chosen[tags[block.name] + kernel[len(block.name):-2]] = kernel
        with tfv1.get_default_graph().name_scope(None):
            for tag, name in chosen.items():
                if name in variables:
                    tfv1.summary.histogram(tag, variables[name])

    # ---- what a pruning method's training cost reads (eps_resnet.methods) ---------------------------------
    def tower_kernels(self):
        """{variable name: kernel} of this tower: replicated towers own theirs (tower1/conv0/W ...) and penalise
        those, as regularize_cost does; the names are the plan's."""
        ctx = get_current_tower_context()
        own = ctx.get_collection_in_tower(tfv1.GraphKeys.TRAINABLE_VARIABLES) if ctx.has_own_variables \
            else tfv1.trainable_variables()
        prefix = ctx.vs_name + "/" if ctx.has_own_variables and ctx.vs_name else ""
        return {v.op.name[len(prefix):]: v for v in own if v.op.name.endswith("/W")}

    def blocks_open(self, gates):
        """{block: 1.0 while its gate is open, else 0.0} (no gradient flows through it); {} for a plain network."""
        return {name: tf.stop_gradient(1.0 - is_discarded)
                for name, (is_discarded, _) in zip(self.plan.block_names_gated, gates)}
