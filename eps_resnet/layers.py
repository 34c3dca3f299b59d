"""The two layers every residual block repeats, convolution and BatchNorm+ReLU, built directly on tf.nn.

tensorpack's Conv2D and BatchNorm wrap tf-keras layer objects, whose set-up (class swapping, scope handling,
`add_weight`) cost more Python time than the ops themselves: at 375 blocks it dominated start-up. These
functions create the same variables under the same names (`W`; `bn/gamma`, `bn/beta`, `bn/mean/EMA`,
`bn/variance/EMA`), so checkpoints are unchanged, and compute what tensorpack's layers compute:
- conv2d: a bias-free convolution with 'SAME' padding; the kernel starts from He initialisation with fan-out;
- bn_relu: BatchNorm normalises with the batch statistics in training towers and the moving averages otherwise,
  momentum 0.9 and ε 1e-5 (tensorpack's defaults, also those of the released code's tensorpack 0.2); the first
  training tower adds the moving-average updates to UPDATE_OPS, which tensorpack's RunUpdateOps callback runs
  after each step; other towers of a multi-GPU run normalise with their own batch and leave the averages alone.
Variables come from tf.compat.v1.get_variable, so towers share or replicate them as their variable scope says.
"""
from .tfcompat import tf, tfv1
from tensorpack.tfutils.tower import get_current_tower_context

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
KERNEL_INITIALIZER = tfv1.variance_scaling_initializer(scale=2.0, mode="fan_out")


def conv2d(name, x, out_channels: int, kernel: int, strides: int = 1, data_format: str = "NHWC",
           then_bn_relu: bool = False):
    """Convolution without bias, 'SAME' padding; its kernel is the variable `<name>/W` [k, k, in, out].
    `then_bn_relu`: follow it by BatchNorm+ReLU in the same scope (tensorpack's `activation=BNReLU`)."""
    in_channels = x.shape[1 if data_format == "NCHW" else 3]
    with tf.name_scope(name):
        W = tfv1.get_variable(name + "/W", [kernel, kernel, in_channels, out_channels], initializer=KERNEL_INITIALIZER)
        step = [1, 1, strides, strides] if data_format == "NCHW" else [1, strides, strides, 1]
        y = tf.nn.conv2d(x, W, step, "SAME", data_format=data_format)
        if then_bn_relu:
            return tf.nn.relu(_batch_norm(name + "/bn/", y, data_format), name="output")
        return tf.identity(y, name="output")


def bn_relu(name, x, data_format: str = "NHWC"):
    """ReLU(BatchNorm(x)) with the variables `<name>/bn/...` (tensorpack's BNReLU)."""
    with tf.name_scope(name):
        return tf.nn.relu(_batch_norm(name + "/bn/", x, data_format), name="output")


def _batch_norm(prefix, x, fmt):
    """BatchNorm over the channel axis, its variables named `<prefix>gamma`, ... in the current variable scope.

    Variables get their full names from get_variable instead of nested variable scopes: leaving a variable
    scope walks every scope the graph has ever opened, which made building the 752-layer network quadratic."""
    ctx = get_current_tower_context()
    channels = x.shape[1 if fmt == "NCHW" else 3]
    with tf.name_scope("bn"):
        gamma = tfv1.get_variable(prefix + "gamma", [channels], initializer=tfv1.ones_initializer())
        beta = tfv1.get_variable(prefix + "beta", [channels], initializer=tfv1.zeros_initializer())
        moving_mean = tfv1.get_variable(prefix + "mean/EMA", [channels], initializer=tfv1.zeros_initializer(),
                                        trainable=False)
        moving_var = tfv1.get_variable(prefix + "variance/EMA", [channels], initializer=tfv1.ones_initializer(),
                                       trainable=False)
        if ctx.is_main_training_tower:
            for v in (moving_mean, moving_var):
                tfv1.add_to_collection(tfv1.GraphKeys.MODEL_VARIABLES, v)
        if not ctx.is_training:
            y, _, _ = tfv1.nn.fused_batch_norm(x, gamma, beta, moving_mean, moving_var, epsilon=BN_EPSILON,
                                               data_format=fmt, is_training=False)
            return y
        if not ctx.is_main_training_tower:  # other towers normalise with their own batch and update nothing
            y, _, _ = tfv1.nn.fused_batch_norm(x, gamma, beta, epsilon=BN_EPSILON, data_format=fmt, is_training=True)
            return y
        # The op also returns the updated moving averages, (1 - momentum)·batch + momentum·average
        y, new_mean, new_var = tfv1.nn.fused_batch_norm(
            x, gamma, beta, moving_mean, moving_var, epsilon=BN_EPSILON, data_format=fmt, is_training=True,
            exponential_avg_factor=1.0 - BN_MOMENTUM)
        for var, value in ((moving_mean, new_mean), (moving_var, new_var)):
            tfv1.add_to_collection(tfv1.GraphKeys.UPDATE_OPS, var.assign(value, read_value=False))
        return y
