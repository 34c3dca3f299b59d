"""The inference graph of a plan, gated or reduced, with its declared tensors; used by calibration, export,
latency and size measurements, the checkpoint check and the benchmarks.

The graph takes raw uint8 RGB images `image` [batch, H, W, 3] (preprocessing is inside) and declares
`logits`, `probabilities`, `classes`, and for a gated plan each kept block's per-example `response_max`.
Variables keep the training checkpoint's names, so any checkpoint of the same plan restores by name.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Optional, Sequence

import numpy as np

from . import UserError
from . import network
from .network import gate_constants
from .plan import Plan
from .tfcompat import session, tf, tfv1
from .tfgraph import find_shared_variable

from tensorpack.tfutils.tower import PredictTowerContext


@dataclass
class InferenceGraph:
    graph: "tf.Graph"
    image: "tf.Tensor"
    outputs: Dict[str, "tf.Tensor"]                  # logits, probabilities, classes
    response_max: Dict[str, "tf.Tensor"] = field(default_factory=dict)  # block -> [batch] (gated plans)
    epsilon: Optional["tf.Variable"] = None            # ε variable (gated plans)
    keep: Optional["tf.Tensor"] = None                 # switchable graphs: bool [kept blocks], False removes one

    @property
    def logits(self):
        return self.outputs["logits"]

    def session(self, checkpoint: Optional[str] = None) -> "tfv1.Session":
        """A session on this graph, its variables restored from `checkpoint` (or freshly initialised)."""
        sess = session(graph=self.graph)
        with self.graph.as_default():
            if checkpoint is None:
                sess.run(tfv1.global_variables_initializer())
            else:
                restore(sess, checkpoint)
        return sess


def build_inference_graph(plan: Plan, epsilon: Optional[float] = None, batch: Optional[int] = None,
                          image_shape: Optional[Iterable[int]] = None, switchable: bool = False) -> InferenceGraph:
    """The forward graph of `plan` in a new tf.Graph: gated when `epsilon` is given, else the plain network
    (discarded blocks of a reduced plan are shortcuts only). `switchable`: a plain network with a `keep` input,
    one flag per block with a residual branch, so that one graph computes `plan.without(any of them)`."""
    shape = list(image_shape) if image_shape is not None else [plan.image_size, plan.image_size, 3]
    graph = tf.Graph()
    with graph.as_default():
        image = tfv1.placeholder(tf.uint8, [batch] + shape, name="image")
        keep = tfv1.placeholder(tf.bool, [len(plan.kept_blocks)], name="keep") if switchable else None
        with PredictTowerContext(""):
            gates = gate_constants(epsilon) if epsilon is not None and not switchable else None
            logits, _, _ = network.forward(plan, image, gates=gates,
                                           keep=tf.unstack(keep, num=len(plan.kept_blocks)) if switchable else None)
        outputs = {"logits": logits, "probabilities": tf.nn.softmax(logits, name="probabilities"),
                   "classes": tf.argmax(logits, axis=1, output_type=tf.int32, name="classes")}
        response_max = {}
        if epsilon is not None and not switchable:
            response_max = {b.name: graph.get_tensor_by_name(b.name + "/response_max:0") for b in plan.kept_blocks}
        eps = find_shared_variable("epsilon", graph) if epsilon is not None and not switchable else None
    return InferenceGraph(graph, image, outputs, response_max, eps, keep)


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
    return saver


class BuiltNetwork:
    """One network's inference graph (any batch size) and a session on it, built once and reused: calibration,
    logits under other weights, the SavedModel and timing all run on it (each new graph costs seconds and grows
    with depth)."""

    def __init__(self, plan: Plan, checkpoint: str, epsilon: Optional[float] = None, image_shape=None,
                 switchable: bool = False):
        self.plan = plan
        self.net = build_inference_graph(plan, epsilon=epsilon, image_shape=image_shape, switchable=switchable)
        check_checkpoint_matches(plan, checkpoint, net=self.net)
        self.sess = session(graph=self.net.graph)
        with self.net.graph.as_default():
            self._saver = restore(self.sess, checkpoint)
        self.checkpoint = checkpoint

    def load(self, checkpoint: str):
        """Other weights of the same network (its Saver reused: the graph gains no ops)."""
        if checkpoint != self.checkpoint:
            with self.net.graph.as_default():
                self._saver.restore(self.sess, checkpoint)
            self.checkpoint = checkpoint

    def run(self, fetch: dict, images: np.ndarray, batch_size: int, removed: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        """`fetch` (name -> tensor) over `images` in batches, concatenated; a switchable network without the
        residual branches of `removed`."""
        feed = {}
        if self.net.keep is not None:
            feed[self.net.keep] = [b.name not in removed for b in self.plan.kept_blocks]
        elif removed:
            raise ValueError("this network is not switchable; build it with switchable=True")
        outs = [self.sess.run(fetch, {**feed, self.net.image: images[i:i + batch_size]})
                for i in range(0, len(images), batch_size)]
        return {k: np.concatenate([o[k] for o in outs]) for k in fetch}

    def logits(self, images: np.ndarray, batch_size: int = 64, removed: Sequence[str] = ()) -> np.ndarray:
        return self.run({"logits": self.net.logits}, images, batch_size, removed)["logits"]

    def forward_pass(self, batch: int, seed: int = 0) -> Callable[[], object]:
        """A call that runs one forward pass at `batch` random images (for interleaved_times)."""
        x = np.random.RandomState(seed).randint(0, 256, size=[batch] + self.net.image.shape.as_list()[1:])
        feed = {self.net.image: x.astype(np.uint8)}
        return lambda: self.sess.run(self.net.logits, feed)

    def write_saved_model(self, export_dir: str, signature_name: str = "serving_default"):
        """This network, with its current weights, as a SavedModel: uint8 `image` -> logits, probabilities, classes."""
        with self.net.graph.as_default():
            builder = tfv1.saved_model.Builder(export_dir)
            signature = tfv1.saved_model.predict_signature_def(inputs={"image": self.net.image},
                                                               outputs=self.net.outputs)
            builder.add_meta_graph_and_variables(self.sess, [tfv1.saved_model.SERVING],
                                                 signature_def_map={signature_name: signature},
                                                 strip_default_attrs=True)
            builder.save()

    def close(self):
        self.sess.close()


# ---- checkpoint transforms: a checkpoint in, a checkpoint out -------------------------------------------------
def read_variables(checkpoint: str) -> Dict[str, np.ndarray]:
    """Every variable of `checkpoint`, by name."""
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def write_variables(variables: Dict[str, np.ndarray], prefix: str):
    """A checkpoint at `prefix` holding `variables` (by name), in a graph of its own."""
    graph = tf.Graph()
    with graph.as_default():
        held = {name: tfv1.Variable(value, name=name.replace("/", "_") + "_", trainable=False)
                for name, value in variables.items()}  # any op name: the Saver writes the names given here
        saver = tfv1.train.Saver(var_list=held)
        with session(graph=graph) as sess:
            sess.run(tfv1.variables_initializer(list(held.values())))
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)


def slice_checkpoint(plan: Plan, reduction, checkpoint: str, prefix: str) -> Plan:
    """Write at `prefix` the checkpoint of the network `reduction` leaves of `plan` (its removed blocks' branches
    dropped, its kernels and BatchNorm cut to the kept channels); return that network's plan."""
    from .reduction import reduced_plan, slice_variables
    reduced = reduced_plan(plan, reduction)
    write_variables(slice_variables(plan, reduction, read_variables(checkpoint)), prefix)
    return reduced


def check_checkpoint_matches(plan: Plan, checkpoint: str, skip: Sequence[str] = (), net: Optional[InferenceGraph] = None):
    """Raise UserError naming the first network variable that the checkpoint lacks or shapes differently.

    ε, the side head and training-only variables are not required: a plain or --no-side checkpoint may
    start a gated run. `skip`: variables not compared (--load takes no mean image from another data set)."""
    try:
        shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    except Exception as e:
        raise UserError("cannot read checkpoint %s (%s); pass a model-N prefix or its .index file"
                        % (checkpoint, str(e).strip().splitlines()[0][:200]))
    net = net or build_inference_graph(plan)
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
