import numpy as np
import pytest

from eps_resnet import UserError
from eps_resnet.gate import average_gate_statistics, unpack_gate_statistics
from eps_resnet.model import EpsResNet
from eps_resnet.plan import cifar_plan, imagenet_plan
from eps_resnet.recipes import Recipe
from eps_resnet.tfcompat import tf, tfv1
from eps_resnet.tfgraph import find_shared_variable
from tensorpack.tfutils.common import get_op_tensor_name
from tensorpack.tfutils.tower import TowerContext, TrainTowerContext

RNG = np.random.RandomState(0)


def settings(**fields) -> Recipe:
    """A CIFAR recipe (the paper's settings: side supervision 0.1, weight decay 2e-4, learning rate 0.1) varied."""
    return Recipe(dataset="cifar10", **fields)


def build(model, is_training=True, batch=None):
    """Placeholders + the model's graph in the current default graph; returns (image, label, cost)."""
    s = model.plan.image_size
    image = tfv1.placeholder(tf.uint8, [batch, s, s, 3], name="image")
    label = tfv1.placeholder(tf.int32, [batch], name="label")
    with TowerContext("", is_training=is_training):
        cost = model.build_graph(image, label)
    return image, label, cost


def random_batch(plan, n=8, classes=None):
    s = plan.image_size
    return (RNG.randint(0, 256, size=(n, s, s, 3)).astype(np.uint8),
            RNG.randint(0, classes or plan.num_classes, size=(n,)).astype(np.int32))


def trainable_count():
    return sum(int(np.prod(v.shape)) for v in tfv1.trainable_variables())


@pytest.mark.parametrize("plan", [cifar_plan(1), cifar_plan(2, num_classes=100), cifar_plan(1, bottleneck=True),
                                  imagenet_plan(18, num_classes=10, image_size=32),
                                  imagenet_plan(50, num_classes=10, image_size=32)],
                         ids=["cifar-n1", "cifar100-n2", "cifar-bottleneck-n1", "imagenet18", "imagenet50"])
def test_graph_parameter_count_equals_plan(plan):
    with tf.Graph().as_default():
        build(EpsResNet(plan, settings(epsilon=2.0)))
        assert trainable_count() == plan.num_params + plan.side_params
    with tf.Graph().as_default():
        build(EpsResNet(plan, settings(epsilon=None, side_weight=0)), is_training=False)
        assert trainable_count() == plan.num_params


def test_reduced_plan_graph_matches_its_count_for_both_styles():
    for plan, drop in ((cifar_plan(2), ["res2.0", "res3.1"]), (cifar_plan(2, bottleneck=True), ["res2.0", "res3.1"]),
                       (imagenet_plan(18, num_classes=10, image_size=32), ["group1/block0", "group3/block1"])):
        reduced = plan.without(drop)
        with tf.Graph().as_default():
            build(EpsResNet(reduced, settings(epsilon=None, side_weight=0)), is_training=False)
            assert trainable_count() == reduced.num_params


def test_closed_gate_blocks_cross_entropy_gradient_and_only_weight_decay_moves_kernels():
    plan = cifar_plan(1)
    recipe = settings(epsilon=1e9, weight_decay=1e-3, standard_lr=((0, 0.5),))
    with tf.Graph().as_default() as g:
        model = EpsResNet(plan, recipe)
        image, label, cost = build(model)
        kernels = [v for v in tfv1.trainable_variables() if v.op.name.startswith("res") and v.op.name.endswith("/W")]
        assert len(kernels) == 6
        ce = g.get_tensor_by_name("cross_entropy_loss:0")
        side_ce = g.get_tensor_by_name("side_cross_entropy_loss:0")
        grads = tf.gradients(ce + 0.1 * side_ce, kernels)
        train_op = model.optimizer().minimize(cost)
        im, lb = random_batch(plan)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            feed = {image: im, label: lb}
            for grad in sess.run(grads, feed):
                assert grad is None or not np.any(grad)
            flags = [g.get_tensor_by_name(name + "/is_discarded:0") for name in plan.block_names_gated]
            assert sum(sess.run(flags, feed)) == 3.0
            before = sess.run(kernels)
            sess.run(train_op, feed)
            after = sess.run(kernels)
    # first momentum step: W <- W - lr * wd * W  (the L2 term is wd * sum(W^2) / 2)
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b * (1 - 0.5 * 1e-3), rtol=1e-6, atol=1e-9)


def test_open_gate_equals_plain_network():
    plan = cifar_plan(2)
    im, _ = random_batch(plan)
    outputs = {}
    values = None
    for eps in (0.0, None):
        with tf.Graph().as_default():
            build(EpsResNet(plan, settings(epsilon=eps)), is_training=False)
            variables = tfv1.global_variables()
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                if values is None:
                    values = {v.op.name: sess.run(v) for v in variables}
                else:
                    for v in variables:
                        v.load(values[v.op.name], sess)
                outputs[eps] = sess.run("logits:0", {"image:0": im})
    np.testing.assert_array_equal(outputs[0.0], outputs[None])


def test_a_few_sgd_steps_train_and_summaries_exist():
    plan = cifar_plan(1)
    with tf.Graph().as_default() as g:
        model = EpsResNet(plan, settings(epsilon=0.5))
        image, label, cost = build(model)
        train_op = model.optimizer().minimize(cost, global_step=tfv1.train.get_or_create_global_step())
        average_gate_statistics(plan)  # what the GateAgreement callback adds in training
        tags = set()
        for s in tfv1.get_collection(tfv1.GraphKeys.SUMMARIES):
            tags.add(get_op_tensor_name(s.op.name)[0])
        im, lb = random_batch(plan, 16)
        with tfv1.Session() as sess:
            sess.run([tfv1.global_variables_initializer(), tfv1.local_variables_initializer()])
            costs = [sess.run([cost, train_op], {image: im, label: lb})[0] for _ in range(5)]
            summary = sess.run(tfv1.summary.merge_all(), {image: im, label: lb})
            kernels = sess.run([v for v in tfv1.trainable_variables() if v.op.name.endswith("/W")])
            wd_cost, wd = sess.run(["wd_cost:0", find_shared_variable("weight_decay")])
    assert len(kernels) == 9  # conv0, 2 per block, both heads
    assert wd == np.float32(2e-4)  # the recipe's, until hyperparams.PolicySetter sets the epoch's value
    np.testing.assert_allclose(wd_cost, wd * sum((k.astype(np.float64) ** 2).sum() / 2 for k in kernels), rtol=1e-5)
    assert all(np.isfinite(costs)) and costs[-1] < costs[0]
    text = " ".join(sorted(tags))
    for needed in ("discarded_cnt", "discarded_ratio", "is_discarded/1_res2.0", "batch_response_max/2_res3.0",
                   "response_mean/0_res1.0", "cross_entropy_loss", "side_train_error", "train_error",
                   "learning_rate", "epsilon", "weights/0_res1.0/conv1", "weights/2_res3.0/conv2", "weights/conv0",
                   "weights/linear", "weights/side/linear", "wd_cost", "weight_decay"):
        assert needed in text, needed
    assert len(summary) > 100
    for name in ("epsilon:0", "learning_rate:0", "logits:0", "incorrect_vector:0", "side_incorrect_vector:0",
                 "res1.0/response_max:0"):
        g.get_tensor_by_name(name)


def test_imagenet_graph_has_top5_and_nchw_matches_nhwc():
    """NCHW is the GPU layout. CPU kernels of some TensorFlow builds run only NHWC pooling (AMD CPUs without
    oneDNN's NCHW kernels), so the NCHW graph is checked by construction here: the same variables (a checkpoint
    moves between CPU and GPU runs), every convolution and pooling in NCHW, and the same logits shape."""
    plan = imagenet_plan(18, num_classes=10, image_size=32)
    graphs = {}
    for fmt in ("NHWC", "NCHW"):
        with tf.Graph().as_default() as g:
            build(EpsResNet(plan, settings(epsilon=1.0, nesterov=True), on_gpu=fmt == "NCHW"), is_training=False)
            g.get_tensor_by_name("incorrect_top5:0")
            graphs[fmt] = {"variables": {v.op.name: v.shape.as_list() for v in tfv1.global_variables()},
                           "formats": {op.get_attr("data_format").decode() for op in g.get_operations()
                                       if op.type in ("Conv2D", "MaxPool", "AvgPool", "FusedBatchNormV3")},
                           "logits": g.get_tensor_by_name("logits:0").shape.as_list()}
    assert graphs["NHWC"]["variables"] == graphs["NCHW"]["variables"]
    assert graphs["NHWC"]["formats"] == {"NHWC"} and graphs["NCHW"]["formats"] == {"NCHW"}
    assert graphs["NHWC"]["logits"] == graphs["NCHW"]["logits"] == [None, 10]


@pytest.mark.parametrize("recipe,message", [
    (settings(epsilon=-1.0), "--epsilon must be >= 0"),
    (settings(histogram_blocks=-1), "--histogram-blocks must be >= 0"),
    (settings(channel_penalty=-0.1), "--channel-penalty must be >= 0"),
])
def test_bad_settings(recipe, message):
    with pytest.raises(UserError, match=message):
        EpsResNet(cifar_plan(1), recipe)


def test_shared_epsilon_is_one_variable_across_towers():
    plan = cifar_plan(1)
    model = EpsResNet(plan, settings(epsilon=1.0))
    with tf.Graph().as_default():
        s = plan.image_size
        for k, name in enumerate(["tower0", "tower1"]):
            with tf.device("/cpu:0"), TrainTowerContext(name, vs_name=name if k else "", index=k, total=2):
                model.build_graph(tfv1.placeholder(tf.uint8, [None, s, s, 3]), tfv1.placeholder(tf.int32, [None]))
        names = [v.op.name for v in tfv1.global_variables() if "epsilon" in v.op.name or "mean_image" in v.op.name]
        assert sorted(names) == ["epsilon", "mean_image"]


def test_graph_building_work_per_block_does_not_grow_with_depth(monkeypatch):
    # Counting, not timing, two kinds of work that once made building quadratic in depth:
    # - every hash or == of a variable under TensorFlow 2's tensor equality calls a context-stack walk, and
    #   tf-keras's legacy layers did O(all variables) of those per layer;
    # - every scan of a variable collection reads each variable's name, and tf.custom_gradient scanned all
    #   variables on each call (once per gate).
    from tensorflow.python.framework import ops
    from tensorflow.python.ops.resource_variable_ops import BaseResourceVariable
    walks, names = [], []
    walk = ops.executing_eagerly_outside_functions
    monkeypatch.setattr(ops, "executing_eagerly_outside_functions", lambda: walks.append(1) or walk())
    name = BaseResourceVariable.name
    monkeypatch.setattr(BaseResourceVariable, "name", property(lambda v: names.append(1) or name.fget(v)))

    def work(n):
        del walks[:], names[:]
        with tf.Graph().as_default():
            image, label, cost = build(EpsResNet(cifar_plan(n), settings()))
            tfv1.gradients(cost, tfv1.trainable_variables())
        return len(walks), len(names)

    w1, w2, w4 = work(1), work(2), work(4)
    for kind in range(2):
        per_block_shallow, per_block_deep = (w2[kind] - w1[kind]) / 3, (w4[kind] - w2[kind]) / 6  # 3 more, 6 more
        assert per_block_deep <= 1.05 * per_block_shallow, (kind, w1, w2, w4)


def test_gate_statistics_are_averaged_over_towers_fed_different_data():
    """Two replicated towers: one sees blank images (every residual is exactly 0, so every gate shuts), the other
    random ones (every gate open at a tiny ε). The statistics the callbacks read are the mean of the two."""
    plan = cifar_plan(1)
    model = EpsResNet(plan, settings(epsilon=1e-6))
    blank = np.zeros((4, 32, 32, 3), np.uint8)
    noisy, labels = random_batch(plan, 4)
    with tf.Graph().as_default() as g:
        for k, images in enumerate([blank, noisy]):
            name = "tower%d" % k
            with tf.device("/cpu:0"), TrainTowerContext(name, vs_name=name if k else "", index=k, total=2):
                model.build_graph(tf.constant(images), tf.constant(labels))
        averaged = average_gate_statistics(plan)
        update = tfv1.get_collection("MOVING_SUMMARY_OPS")
        per_tower = [[g.get_tensor_by_name("tower%d/%s/is_discarded:0" % (k, n)) for n in plan.block_names_gated]
                     for k in range(2)]
        with tfv1.Session() as sess:
            sess.run([tfv1.global_variables_initializer(), tfv1.local_variables_initializer()])
            flags, _ = sess.run([per_tower, update])
            values = sess.run(averaged)
    assert flags == [[1.0] * 3, [0.0] * 3]
    stats = unpack_gate_statistics(plan.block_names_gated, values)
    assert [flag for flag, _ in stats.values()] == pytest.approx([0.5] * 3)
    assert all(rmax > 0 for _, rmax in stats.values())  # half of the random tower's max|F|


def test_validation_tower_scores_the_reduced_network_an_export_builds_and_skips_removed_branches():
    """The validation tower's `reduced/` network (EpsResNet.validation_tower_func), given keep flags, computes the
    logits of the plain network of plan.without(removed) bit for bit, and never runs a removed residual branch."""
    from eps_resnet.inference import build_inference_graph
    from eps_resnet.network import reduced_network_keep
    from tensorpack.tfutils.tower import PredictTowerContext
    plan = cifar_plan(2)
    removed = ["res1.1", "res2.0"]  # the second block removes a down-sampling block: its shortcut stays
    im, labels = random_batch(plan, n=16)
    with tf.Graph().as_default():
        model = EpsResNet(plan, settings(epsilon=1e9))  # every gate of the gated network shut
        image = tfv1.placeholder(tf.uint8, [None, 32, 32, 3], name="image")
        label = tfv1.placeholder(tf.int32, [None], name="label")
        with PredictTowerContext("InferenceTower"):
            model.validation_tower_func()(image, label)
        keep = reduced_network_keep(len(plan.block_names_gated))
        with tfv1.Session() as sess:
            sess.run([tfv1.global_variables_initializer(), tfv1.local_variables_initializer()])
            values = {v.op.name: sess.run(v) for v in tfv1.global_variables()}
            keep.load([n not in removed for n in plan.block_names_gated], sess)
            meta = tfv1.RunMetadata()
            reduced, wrong = sess.run(["InferenceTower/reduced/logits:0", "InferenceTower/reduced/incorrect_vector:0"],
                                      {image: im, label: labels}, run_metadata=meta,
                                      options=tfv1.RunOptions(trace_level=tfv1.RunOptions.FULL_TRACE))
            gated = sess.run("InferenceTower/logits:0", {image: im})
    ran = {node.node_name for dev in meta.step_stats.dev_stats for node in dev.node_stats}
    assert any(n.startswith("InferenceTower/reduced/res1.0/conv2/") for n in ran)
    computed = [n for n in ran if "ReadVariableOp" not in n]  # variable reads have no input to be dead on
    assert not [n for n in computed if n.startswith(("InferenceTower/reduced/res1.1/conv",
                                                     "InferenceTower/reduced/res2.0/conv"))]
    net = build_inference_graph(plan.without(removed))
    with net.graph.as_default(), tfv1.Session() as sess:
        sess.run(tfv1.global_variables_initializer())
        for v in tfv1.global_variables():
            v.load(values[v.op.name], sess)
        exported = sess.run(net.logits, {net.image: im})
    np.testing.assert_array_equal(reduced, exported)
    np.testing.assert_array_equal(wrong, (exported.argmax(1) != labels).astype(np.float32))
    assert not np.array_equal(gated, reduced)  # the gated tower beside it shut every gate


def test_cifar_bottleneck_units_stride_their_first_convolution_and_keep_the_map_sizes():
    """The pre-activation paper's released units: the first 1x1 convolution of a group's first unit strides (as
    does its 1x1 shortcut); every unit's output has the plan's size and channels."""
    plan = cifar_plan(1, bottleneck=True)
    with tf.Graph().as_default() as graph:
        build(EpsResNet(plan, settings(epsilon=None, side_weight=0)), is_training=False, batch=2)
        for b in plan.blocks:
            conv1 = graph.get_tensor_by_name(b.name + "/conv1/output:0")
            out = graph.get_tensor_by_name(b.name + "/output:0")
            assert conv1.shape.as_list() == [2, b.out_size, b.out_size, b.mid_channels], b.name
            assert out.shape.as_list() == [2, b.out_size, b.out_size, b.out_channels], b.name
