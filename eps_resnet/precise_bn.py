"""BatchNorm statistics re-estimated for the network that is exported (`prune_export.py --recompute-bn N`).

Not in the paper nor the released code (docs/FIDELITY.md). Training keeps moving averages of each BatchNorm's
input over the networks the gates chose batch by batch. A block whose largest response sits near ε is open on
some batches and shut on others, so the layers after it average the statistics of two different networks and
the reduced network, which applies it always (or never), is normalised with statistics of neither. Here the
reduced network runs over training batches in training mode, each BatchNorm normalising with its batch as in
training, and the pooled mean and variance of every BatchNorm's input over all those images replace the moving
averages (precise BatchNorm: Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).
"""
from typing import Iterable, Iterator

import numpy as np

from .inference import restore
from . import network
from .plan import Plan
from .tfcompat import session, tf, tfv1

from tensorpack.tfutils.tower import TowerContext


def _variable_behind(tensor, variables):
    """The variable whose value `tensor` reads (through Identity/ReadVariableOp)."""
    op = tensor.op
    while op not in variables and op.type in ("Identity", "ReadVariableOp") and op.inputs:
        op = op.inputs[0].op
    return variables.get(op)


def recompute_bn_statistics(plan: Plan, checkpoint: str, batches: Iterable[np.ndarray], out_checkpoint: str) -> dict:
    """Write `out_checkpoint`: the variables of `plan`'s network from `checkpoint`, with every BatchNorm's moving
    mean and variance replaced by the pooled statistics of its input over `batches` (uint8 images [B, H, W, 3]).
    Returns {"images": how many, "layers": how many BatchNorms, "largest_change": the largest relative change of a
    moving variance}."""
    graph = tf.Graph()
    with graph.as_default():
        image = tfv1.placeholder(tf.uint8, [None, plan.image_size, plan.image_size, 3], name="image")
        with TowerContext("", is_training=True):
            network.forward(plan, image)
        variables = {v.op: v for v in tfv1.global_variables()}
        layers = []  # (moving mean, moving variance, batch mean, batch variance)
        for op in graph.get_operations():
            if not op.type.startswith("FusedBatchNorm") or "Grad" in op.type:
                continue
            axes = [0, 2, 3] if op.get_attr("data_format") == b"NCHW" else [0, 1, 2]
            mean, variance = tf.nn.moments(op.inputs[0], axes)
            moving = (_variable_behind(op.inputs[3], variables), _variable_behind(op.inputs[4], variables))
            if None in moving:
                raise RuntimeError("BatchNorm %s does not read moving statistics" % op.name)
            layers.append(moving + (mean, variance))
        saver = tfv1.train.Saver(var_list={v.op.name: v for v in variables.values()})
        with session(graph=graph) as sess:
            restore(sess, checkpoint)
            old_variance = sess.run([layer[1] for layer in layers])
            count, means, squares = 0, None, None
            for x in batches:
                stats = sess.run([(layer[2], layer[3]) for layer in layers], {image: x})
                n = len(x)
                # pooled over images: E[x] and E[x²] = var + mean² per batch, weighted by its size
                m = [n * s[0].astype(np.float64) for s in stats]
                q = [n * (s[1].astype(np.float64) + np.square(s[0].astype(np.float64))) for s in stats]
                means = m if means is None else [a + b for a, b in zip(means, m)]
                squares = q if squares is None else [a + b for a, b in zip(squares, q)]
                count += n
            if not count:
                raise ValueError("no batches to estimate BatchNorm statistics from")
            change = 0.0
            for (moving_mean, moving_var, _, _), total, total_sq, old in zip(layers, means, squares, old_variance):
                mean = total / count
                variance = np.maximum(total_sq / count - np.square(mean), 0.0)
                moving_mean.load(mean.astype(np.float32), sess)
                moving_var.load(variance.astype(np.float32), sess)
                change = max(change, float(np.max(np.abs(variance - old) / np.maximum(old, 1e-12))))
            saver.save(sess, out_checkpoint, write_meta_graph=False, write_state=False)
    return {"images": count, "layers": len(layers), "largest_change": change}


def training_batches(dataset: str, data_dir, image_size: int, batches: int, batch_size: int = 64,
                     seed: int = 0) -> Iterator[np.ndarray]:
    """`batches` batches of the training split as training sees them (shuffled, augmented); a training set smaller
    than that is passed over again. The shuffling and augmentation draw from `seed`, so two exports of one run
    re-estimate the same statistics."""
    from tensorpack.utils import utils as tensorpack_utils
    from .data import build_dataflow
    ds = build_dataflow(dataset, "train", batch_size, data_dir=data_dir, image_size=image_size)
    # tensorpack seeds every dataflow's RNG from the time unless its global seed is set; set it only while the
    # dataflow draws its RNGs, so that nothing else in the process changes
    global_seed = tensorpack_utils._RNG_SEED
    tensorpack_utils.fix_rng_seed(seed)
    try:
        ds.reset_state()
    finally:
        tensorpack_utils._RNG_SEED = global_seed
    produced = 0
    while produced < batches:
        before = produced
        for x, _ in ds:
            yield x
            produced += 1
            if produced == batches:
                return
        if produced == before:
            return
