"""Graph plumbing the model needs: variables shared by every tower, and cheap vector moving averages."""
import numpy as np

from .tfcompat import tf, tfv1

from tensorpack.tfutils.summary import MOVING_SUMMARY_OPS_KEY


def shared_scalar_variable(name, initial_value):
    """A non-trainable float variable created once per graph and shared by every tower.

    Under tensorpack's replicated multi-GPU trainer, a variable made with get_variable inside
    build_graph is duplicated per tower (`tower1/epsilon`), and hyper-parameter setters only reach
    tower 0's copy. Keeping the variable in a graph collection and creating it at the root name
    scope gives one `epsilon:0` (or `learning_rate:0`) that all towers and predictors read.
    """
    return shared_variable(name, np.float32(initial_value))


def find_shared_variable(name, graph=None):
    """The graph's shared variable `name` (epsilon, learning_rate, mean_image), or None if it has none."""
    found = (graph or tfv1.get_default_graph()).get_collection("eps_resnet_shared/" + name)
    return found[0] if found else None


def shared_variable(name, initial_value):
    """A non-trainable float variable (any shape) created once per graph at the root name scope."""
    graph = tfv1.get_default_graph()
    found = find_shared_variable(name, graph)
    if found is not None:
        return found
    with graph.name_scope(None):
        var = tfv1.Variable(initial_value, name=name, trainable=False, dtype=tf.float32, use_resource=True)
    graph.add_to_collection("eps_resnet_shared/" + name, var)
    return var


def add_vector_moving_summary(tags, values, decay=0.95):
    """Moving averages of the scalars in `values` (a vector), with one variable and one update op per step.

    Same numbers and summary tags as tensorpack's add_moving_summary (EMA with zero-debias, one tag per element),
    but a 375-block network gets one update instead of 750 small EMA subgraphs (each a few ops run every step).
    Unlike tensorpack's EMAs these variables are saved in checkpoints, so a
    resumed run continues the discard statistics instead of restarting them. Returns the current averages.
    """
    graph = tfv1.get_default_graph()
    with graph.name_scope(None), tfv1.variable_scope(tfv1.VariableScope(reuse=False, name="")):
        with tf.name_scope("vector_EMA"):
            average = tfv1.get_variable("vector_EMA/average", shape=values.shape, initializer=tf.zeros_initializer(),
                                        trainable=False)
            weight = tfv1.get_variable("vector_EMA/weight", shape=[], initializer=tf.zeros_initializer(),
                                       trainable=False)
            new_average = average.assign(decay * average + (1 - decay) * values)
            new_weight = weight.assign(decay * weight + (1 - decay))
            debiased = new_average / new_weight
            tfv1.add_to_collection(MOVING_SUMMARY_OPS_KEY, debiased)
            current = average / tf.maximum(weight, 1e-12)
        # one Unpack op, where current[i] would be a strided slice and three constants per tag
        for tag, value in zip(tags, tf.unstack(current, num=len(tags))):
            # "-summary": the name itself is taken by the op; tensorpack's monitors strip the suffix
            tfv1.summary.scalar(tag + "-summary", value)
    return current
