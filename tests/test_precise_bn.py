"""prune_export --recompute-bn's estimator (eps_resnet.precise_bn): the statistics it writes are those of the
BatchNorm inputs pooled over every image it saw, and the rest of the checkpoint is left as it was."""
import numpy as np
import pytest

from eps_resnet.inference import build_inference_graph, restore
from eps_resnet.network import forward
from eps_resnet.plan import cifar_plan
from eps_resnet.precise_bn import recompute_bn_statistics
from eps_resnet.tfcompat import tf, tfv1
from tensorpack.tfutils.tower import TowerContext

PLAN = cifar_plan(1, image_size=8).without(["res2.0"])  # a reduced plan: one residual branch removed
RNG = np.random.RandomState(5)
IMAGES = RNG.randint(0, 256, size=(40, 8, 8, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Random weights, BatchNorm scales, offsets and moving statistics far from what the images give."""
    path = str(tmp_path_factory.mktemp("ckpt") / "model")
    net = build_inference_graph(PLAN)
    with net.graph.as_default(), net.session() as sess:
        for v in tfv1.global_variables():
            if "/bn/" in v.op.name:
                low = 0.5 if v.op.name.endswith(("gamma", "variance/EMA")) else -1.0
                v.load(RNG.uniform(low, 2.0, size=v.shape.as_list()).astype(np.float32), sess)
        tfv1.train.Saver().save(sess, path, write_meta_graph=False)
    return path


def values(checkpoint):
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def training_mode_logits(checkpoint, images):
    """Logits of PLAN's network normalising with the statistics of `images` as one batch (as training does)."""
    with tf.Graph().as_default() as graph:
        x = tfv1.placeholder(tf.uint8, [None, 8, 8, 3])
        with TowerContext("", is_training=True):
            logits, _, _ = forward(PLAN, x)
        with tfv1.Session(graph=graph) as sess:
            restore(sess, checkpoint)
            return sess.run(logits, {x: images})


def test_statistics_from_one_batch_make_inference_equal_training_mode(checkpoint, tmp_path):
    """With every image in one batch, the re-estimated moving averages are exactly that batch's statistics, so the
    inference network (moving averages) computes what the training-mode network computes on that batch."""
    out = str(tmp_path / "bn")
    info = recompute_bn_statistics(PLAN, checkpoint, [IMAGES], out)
    moving_variances = [name for name in values(checkpoint) if name.endswith("/variance/EMA")]
    assert info["images"] == 40 and info["layers"] == len(moving_variances)
    expected = training_mode_logits(checkpoint, IMAGES)
    net = build_inference_graph(PLAN)
    with net.session(checkpoint) as sess:
        before = sess.run(net.logits, {net.image: IMAGES})
    with net.session(out) as sess:
        after = sess.run(net.logits, {net.image: IMAGES})
    assert np.abs(before - expected).max() > 0.1  # the planted statistics were wrong
    np.testing.assert_allclose(after, expected, atol=1e-4, rtol=1e-4)
    # only the moving statistics changed
    old, new = values(checkpoint), values(out)
    assert sorted(old) == sorted(new)
    changed = sorted(name for name in old if not np.array_equal(old[name], new[name]))
    assert changed == sorted(name for name in old if name.endswith(("/mean/EMA", "/variance/EMA")))


def test_statistics_over_several_batches_are_pooled_over_all_images(checkpoint, tmp_path):
    """Batches of unequal sizes: the stem's BatchNorm (whose input no other BatchNorm shapes) gets the mean and the
    biased variance of its input over all 40 images, not the average of per-batch values."""
    out = str(tmp_path / "bn")
    recompute_bn_statistics(PLAN, checkpoint, [IMAGES[:5], IMAGES[5:12], IMAGES[12:]], out)
    net = build_inference_graph(PLAN)
    stem = next(op for op in net.graph.get_operations() if op.name.startswith("conv0/") and op.type.startswith("FusedBatchNorm")).inputs[0]
    with net.session(checkpoint) as sess:
        features = sess.run(stem, {net.image: IMAGES}).astype(np.float64)
    first = "conv0/bn/"
    new = values(out)
    np.testing.assert_allclose(new[first + "mean/EMA"], features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new[first + "variance/EMA"], features.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_training_batches_are_the_same_for_every_export_of_a_run():
    """The bundled digits, shuffled and augmented as in training, drawn from a fixed seed: two exports of one run
    re-estimate the same statistics. tensorpack's global seed is left as it was."""
    from tensorpack.utils import utils as tensorpack_utils
    from eps_resnet.precise_bn import training_batches
    draw = lambda seed: np.stack(list(training_batches("digits", None, 16, 3, batch_size=8, seed=seed)))  # noqa: E731
    first, again, other = draw(0), draw(0), draw(1)
    assert first.shape == (3, 8, 16, 16, 3)
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    assert tensorpack_utils._RNG_SEED is None
