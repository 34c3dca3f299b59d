"""The inference graph of a plan, gated or reduced, with its declared tensors; used by calibration, export,
latency and size measurements, the checkpoint check and the benchmarks.

The graph takes raw uint8 RGB images `image` [batch, H, W, 3] (preprocessing is inside) and declares
`logits`, `probabilities`, `classes`, and for a gated plan each kept block's per-example `response_max`.
Variables keep the training checkpoint's names, so any checkpoint of the same plan restores by name.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Optional, Sequence

from . import UserError
from .model import EpsResNet, ModelSettings
from .plan import Plan
from .tfcompat import tf, tfv1
from .tfgraph import find_shared_variable

from tensorpack.tfutils.tower import PredictTowerContext


@dataclass
class InferenceGraph:
    graph: "tf.Graph"
    image: "tf.Tensor"
    outputs: Dict[str, "tf.Tensor"]                  # logits, probabilities, classes
    response_max: Dict[str, "tf.Tensor"] = field(default_factory=dict)  # block -> [batch] (gated plans)
    epsilon: Optional["tf.Variable"] = None            # ε variable (gated plans)

    @property
    def logits(self):
        return self.outputs["logits"]

    def session(self, checkpoint: Optional[str] = None) -> "tfv1.Session":
        """A session on this graph, its variables restored from `checkpoint` (or freshly initialised)."""
        sess = tfv1.Session(graph=self.graph)
        with self.graph.as_default():
            if checkpoint is None:
                sess.run(tfv1.global_variables_initializer())
            else:
                restore(sess, checkpoint)
        return sess


def build_inference_graph(plan: Plan, epsilon: Optional[float] = None, batch: Optional[int] = None,
                          image_shape: Optional[Iterable[int]] = None) -> InferenceGraph:
    """The forward graph of `plan` in a new tf.Graph: gated when `epsilon` is given, else the plain network
    (discarded blocks of a reduced plan are shortcuts only)."""
    shape = list(image_shape) if image_shape is not None else [plan.image_size, plan.image_size, 3]
    graph = tf.Graph()
    with graph.as_default():
        image = tfv1.placeholder(tf.uint8, [batch] + shape, name="image")
        model = EpsResNet(plan, ModelSettings(epsilon=epsilon, side_weight=0.0))
        with PredictTowerContext(""):
            logits, _, _ = model.forward(image)
        outputs = {"logits": logits, "probabilities": tf.nn.softmax(logits, name="probabilities"),
                   "classes": tf.argmax(logits, axis=1, output_type=tf.int32, name="classes")}
        response_max = {}
        if epsilon is not None:
            response_max = {b.name: graph.get_tensor_by_name(b.name + "/response_max:0") for b in plan.kept_blocks}
        eps = find_shared_variable("epsilon", graph) if epsilon is not None else None
    return InferenceGraph(graph, image, outputs, response_max, eps)


# Variables that checkpoints written before they existed lack; such a checkpoint keeps their initial values,
# which are what that run used (ImageNet's intended normalisation constants).
OPTIONAL_VARIABLES = ("channel_mean", "channel_std")


def restore(sess, checkpoint: str):
    """Restore every variable of the session's graph from `checkpoint`, by name."""
    in_checkpoint = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    variables = tfv1.global_variables()
    absent = [v for v in variables if v.op.name in OPTIONAL_VARIABLES and v.op.name not in in_checkpoint]
    saver = tfv1.train.Saver(var_list={v.op.name: v for v in variables if v not in absent})
    saver.restore(sess, checkpoint)
    if absent:
        sess.run(tfv1.variables_initializer(absent))


def check_checkpoint_matches(plan: Plan, checkpoint: str, skip: Sequence[str] = ()):
    """Raise UserError naming the first network variable that the checkpoint lacks or shapes differently.

    ε, the side head and training-only variables are not required: a plain or --no-side checkpoint may
    start a gated run. `skip`: variables not compared (--load takes no mean image from another data set)."""
    try:
        shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    except Exception as e:
        raise UserError("cannot read checkpoint %s (%s); pass a model-N prefix or its .index file"
                        % (checkpoint, str(e).strip().splitlines()[0][:200]))
    net = build_inference_graph(plan)
    with net.graph.as_default():
        for v in tfv1.global_variables():
            name = v.op.name
            if name in skip or (name in OPTIONAL_VARIABLES and name not in shapes):
                continue
            if name not in shapes:
                raise UserError("checkpoint %s does not match this network: it has no variable %s (another depth "
                                "or dataset?); load a checkpoint of the same network" % (checkpoint, name))
            if list(shapes[name]) != v.shape.as_list():
                raise UserError("checkpoint %s does not match this network: %s has shape %s there, %s here"
                                % (checkpoint, name, shapes[name], v.shape.as_list()))


def interleaved_times(runs: Dict[str, Callable[[], object]], rounds: int, warmup: int = 3,
                      repeat: int = 1) -> Dict[str, list]:
    """Seconds per call of each function, measured in alternating order round after round (so slow drifts of a
    shared machine hit every run alike; compare runs by the per-round ratios)."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(repeat):
                runs[name]()
            times[name].append((time.perf_counter() - t0) / repeat)
    return times
