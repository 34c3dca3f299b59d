"""Channel pruning (eps_resnet.channels): the groups skip connections tie, the regulariser by hand, and removal of
zeroed channels that leaves the network's function exactly as it was."""
import os

import numpy as np
import pytest

from eps_resnet.channels import TINY, channel_groups, channels_to_keep, masked_variables, penalty_tensor, slot_norms
from eps_resnet.plan import cifar_plan, imagenet_plan
from eps_resnet.reduction import reduced_plan
from eps_resnet.tfcompat import tf, tfv1


def members_of(groups, slot):
    """{(variable, axis): position} of every kernel slice in `slot` ((group, index))."""
    sid = groups.slots.index(slot)
    return {(m.variable, m.axis): m.slots.index(sid) for m in groups.members if sid in m.slots}


def test_a_stem_channel_is_one_group_across_the_zero_padding_shortcuts():
    """ResNet-8: stem channel 3 continues as channel 8+3 of stage 2 and 16+8+3 of stage 3 (pads 8 and 16 each
    side); its group holds every slice that writes it (stem, each block's last convolution) or reads it (each
    block's first convolution, the classifier)."""
    groups = channel_groups(cifar_plan(1))
    assert members_of(groups, ("conv0", 3)) == {
        ("conv0/W", -1): 3, ("res1.0/conv1/W", -2): 3, ("res1.0/conv2/W", -1): 3,
        ("res2.0/conv1/W", -2): 3, ("res2.0/conv2/W", -1): 11,
        ("res3.0/conv1/W", -2): 11, ("res3.0/conv2/W", -1): 27, ("linear/W", -2): 27}
    # a padded channel: written first by res2.0's branch (the shortcut only pads zeros there)
    assert members_of(groups, ("res2.0/pad", 0)) == {
        ("res2.0/conv2/W", -1): 0, ("res3.0/conv1/W", -2): 0, ("res3.0/conv2/W", -1): 16, ("linear/W", -2): 16}
    assert members_of(groups, ("res1.0/conv1", 5)) == {("res1.0/conv1/W", -1): 5, ("res1.0/conv2/W", -2): 5}
    assert groups.num_slots == 16 + 16 + 16 + 32 + 32 + 64
    assert not any(m.variable.startswith("side/") for m in groups.members)  # training's side head is not exported


def test_a_projection_shortcut_ends_one_group_and_starts_the_next():
    groups = channel_groups(imagenet_plan(50))
    start = members_of(groups, ("group1/block0/shortcut", 7))
    assert start[("group1/block0/convshortcut/W", -1)] == 7 and start[("group1/block3/conv3/W", -1)] == 7
    assert start[("group2/block0/convshortcut/W", -2)] == 7 and start[("group2/block0/conv1/W", -2)] == 7
    assert ("group2/block1/conv1/W", -2) not in start
    # a bottleneck's two inner groups
    assert members_of(groups, ("group1/block2/conv2", 0)) == {("group1/block2/conv2/W", -1): 0,
                                                              ("group1/block2/conv3/W", -2): 0}


def hand_made_kernels(plan):
    """Every kernel zero but two entries of stem channel 3's group: 3 in the stem, 4 in res2.0's last convolution."""
    groups = channel_groups(plan)
    values = {}
    for b in plan.blocks:
        (mid,) = b.inner_channels
        values[b.name + "/conv1/W"] = np.zeros((3, 3, b.in_channels, mid), np.float32)
        values[b.name + "/conv2/W"] = np.zeros((3, 3, mid, b.out_channels), np.float32)
    values["conv0/W"] = np.zeros((3, 3, 3, 16), np.float32)
    values["linear/W"] = np.zeros((64, 10), np.float32)
    assert set(values) == {m.variable for m in groups.members}  # the members are exactly the kernels
    values["conv0/W"][1, 1, 0, 3] = 3.0
    values["res2.0/conv2/W"][0, 2, 5, 11] = 4.0  # stage 2 position 11 = stem channel 3
    return groups, values


@pytest.mark.parametrize("shut", [False, True])
def test_the_regulariser_value_and_gradient_by_hand(shut):
    """Slot conv0#3 has 8 member slices, norms 3, 4 and six zeros (each sqrt(TINY) under the root). A kernel entry
    lies in two slots, its input channel's and its output channel's: the 4 (input channel 5 of res2.0's conv2) also
    makes slot res2.0/conv1#5 (members: conv1's output filter 5, zero, and that slice). Every other slot is all
    zeros. Shutting res1.0's gate takes its two slices out of slot conv0#3 (6 members)."""
    plan = cifar_plan(1)
    groups, values = hand_made_kernels(plan)
    n, zero = groups.num_slots, np.sqrt(TINY)
    cross = np.sqrt(25 + TINY) + np.sqrt(16 + TINY) + (n - 2) * zero
    norms = [3.0, 4.0] + [zero] * (4 if shut else 6)
    aware = np.sqrt(np.var(norms) + TINY) + np.sqrt(np.var([zero, 4.0]) + TINY) + (n - 2) * zero
    slot = groups.slots.index(("conv0", 3))
    assert slot_norms(groups, values, ["res2.0", "res3.0"] if shut else None)[slot] == pytest.approx(5.0)

    graph = tf.Graph()
    with graph.as_default():
        kernels = {k: tf.constant(v) for k, v in values.items()}
        block_open = {"res1.0": tf.constant(0.0 if shut else 1.0)}
        total, cross_t, aware_t = penalty_tensor(groups, kernels, block_open, variance_weight=0.5)
        grad = tf.gradients(total, kernels["conv0/W"])[0]
        with tfv1.Session() as sess:
            got_total, got_cross, got_aware, got_grad = sess.run([total, cross_t, aware_t, grad])
    assert got_cross == pytest.approx(cross, rel=1e-5) and got_aware == pytest.approx(aware, rel=1e-4)
    assert got_total == pytest.approx(cross + 0.5 * aware, rel=1e-5)
    # d cross / d a = a / |slot| = 3/5; d std / d a = (3 - mean) / (members * std)
    members = len(norms)
    d_aware = (3.0 - np.mean(norms)) / (members * np.std(norms))
    assert got_grad[1, 1, 0, 3] == pytest.approx(3 / 5 + 0.5 * d_aware, rel=1e-4)
    # another stem channel is all zero: its slices get (almost) no gradient, and the stem's other entries none
    assert abs(got_grad[1, 1, 0, 4]) < 1e-3 and got_grad[0, 0, 1, 3] == 0


def test_the_regulariser_at_resnet_1001_holds_one_number_per_kernel_slice():
    """ResNet-1001 has about 25,000 channel slots and 2,000 member kernels: no tensor of the regulariser may be
    [members, slots] (50 M numbers a tower); the largest holds one entry per member slice."""
    from eps_resnet.reduction import variable_axes
    plan = cifar_plan(111, bottleneck=True)
    groups = channel_groups(plan)
    slices = sum(len(m.slots) for m in groups.members)
    graph = tf.Graph()
    with graph.as_default():
        shapes = {name: [3] * len(axes) for name, axes in variable_axes(plan).items()}
        for m in groups.members:  # the channel axes' sizes; spatial ones 3
            shapes[m.variable][m.axis] = len(m.slots)
        kernels = {m.variable: tfv1.placeholder(tf.float32, shapes[m.variable]) for m in groups.members}
        block_open = {b.name: tfv1.placeholder(tf.float32, ()) for b in plan.blocks if b.residual}
        penalty_tensor(groups, kernels, block_open, variance_weight=1.0)
        inputs = set(kernels.values())
        largest = max(t.shape.num_elements() or 0 for op in graph.get_operations() for t in op.outputs
                      if t not in inputs)
    assert len(groups.members) > 1500 and groups.num_slots > 20000
    assert largest <= slices < len(groups.members) * groups.num_slots / 100


def random_network_variables(plan, seed=0):
    """An initialised inference network's variables, with BatchNorm's shifts and moving means made nonzero (so
    that a dead channel leaks ReLU(β) downstream, as after training)."""
    from eps_resnet.inference import build_inference_graph
    net = build_inference_graph(plan)
    rng = np.random.RandomState(seed)
    with net.graph.as_default():
        sess = net.session()
        values = {v.op.name: sess.run(v) for v in tfv1.global_variables()}
        sess.close()
    for name, value in values.items():
        if name.endswith(("/beta", "/mean/EMA")):
            values[name] = rng.uniform(0.1, 1.0, value.shape).astype(value.dtype)
        elif name.endswith("/variance/EMA"):
            values[name] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
    return values


def test_removing_zeroed_channels_leaves_the_logits_as_they_were(tmp_path):
    """Zero some stem channels, a padded channel, half of an inner group and the whole inner group of res3.0 (that
    block goes whole), then cut them out: the reduced network computes the zeroed one's logits, BatchNorm's
    ReLU(β) leak through dead channels included (it meets zeroed reading slices)."""
    from eps_resnet.inference import BuiltNetwork, write_variables
    from eps_resnet.reduction import slice_variables
    plan = cifar_plan(1, image_size=16)
    variables = random_network_variables(plan)
    groups = channel_groups(plan)
    gone = np.zeros(groups.num_slots, bool)
    for slot in [("conv0", 1), ("conv0", 5), ("res2.0/pad", 2)] + [("res1.0/conv1", i) for i in range(0, 16, 2)] \
            + [("res3.0/conv1", i) for i in range(64)]:
        gone[groups.slots.index(slot)] = True
    zeroed = masked_variables(groups, variables, gone)
    reduction, evidence, again = channels_to_keep(plan, [], zeroed, threshold=1e-9)
    assert reduction.removed_blocks == ("res3.0",) and evidence["blocks_emptied"] == ["res3.0"]
    assert reduction.kept_channels["conv0"] == tuple(i for i in range(16) if i not in (1, 5))
    assert reduction.kept_channels["res1.0/conv1"] == tuple(range(1, 16, 2))
    assert evidence["removed"] == int(gone.sum()) == 2 + 1 + 8 + 64
    assert all(np.array_equal(again[k], zeroed[k]) for k in zeroed)

    reduced = reduced_plan(plan, reduction)
    assert reduced.stem_channels == 14 and reduced.blocks[0].inner_channels == (8,)
    assert reduced.num_params < plan.num_params
    write_variables(zeroed, str(tmp_path / "zeroed"))
    write_variables(slice_variables(plan, reduction, zeroed), str(tmp_path / "sliced"))
    images = np.random.RandomState(1).randint(0, 256, (32, 16, 16, 3)).astype(np.uint8)
    full, small = BuiltNetwork(plan, str(tmp_path / "zeroed")), BuiltNetwork(reduced, str(tmp_path / "sliced"))
    try:
        expected, got = full.logits(images), small.logits(images)
    finally:
        full.close()
        small.close()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # and the zeroing matters: the unzeroed network computes other logits
    write_variables(variables, str(tmp_path / "original"))
    original = BuiltNetwork(plan, str(tmp_path / "original"))
    try:
        assert not np.allclose(expected, original.logits(images), atol=1e-3)
    finally:
        original.close()


def test_a_group_all_below_the_threshold_keeps_its_strongest_channel():
    """The hand-made kernels at threshold 1: slots conv0#3 (norm 5) and res2.0/conv1#5 (norm 4) stay; the inner
    groups of res1.0 and res3.0 are all zero, so those blocks go whole; the padded groups, all zero, keep one
    channel each (the trunk cannot lose a whole group)."""
    plan = cifar_plan(1)
    groups, values = hand_made_kernels(plan)
    reduction, evidence, _ = channels_to_keep(plan, [], values, threshold=1.0)
    assert reduction.removed_blocks == ("res1.0", "res3.0") and evidence["blocks_emptied"] == ["res1.0", "res3.0"]
    assert reduction.kept_channels["conv0"] == (3,) and reduction.kept_channels["res2.0/conv1"] == (5,)
    assert len(reduction.kept_channels["res2.0/pad"]) == 1 and len(reduction.kept_channels["res3.0/pad"]) == 1
    assert evidence["removed"] == groups.num_slots - 4 and evidence["smallest_kept_norm"] == 0.0
    assert evidence["largest_removed_norm"] == 0.0
    reduced = reduced_plan(plan, reduction)
    assert [(b.name, b.in_channels, b.inner_channels, b.out_channels) for b in reduced.blocks if b.residual] == [
        ("res2.0", 1, (1,), 2)]


COMPARISON_RUNS = "-n 1 --max-epoch 3 --steps-per-epoch 40 --epsilon-start 1"  # tiny: 3 blocks, 120 steps


@pytest.mark.slow
def test_the_comparison_trains_exports_and_tables_every_method(tmp_path):
    """`python -m eps_resnet.compare` on one seed of tiny runs: plain, ε-ResNet, channels and both train and export
    side by side. The channel exports remove channels (the combined one blocks too), compute the network with those
    channels zeroed, and load in a process that imports only TensorFlow; the tables and the figure name every run."""
    import json
    import os
    from eps_resnet.commands import training_command
    from eps_resnet.plan import Plan
    from eps_resnet.reduction import Reduction
    from eps_resnet.rundir import Run
    from tests.processes import run_script
    out, docs = str(tmp_path / "compare"), str(tmp_path / "docs")
    proc = run_script("-m", "eps_resnet.compare", "--out", out, "--seeds", "1", "--train-args", COMPARISON_RUNS,
                      "--recompute-bn", "2", "--channel-threshold", "0.2", "--docs", docs, check=True, timeout=1200)
    comparison = json.load(open(os.path.join(docs, "comparison.json")))
    rows = {r["method"]: r for r in comparison["rows"]}
    assert sorted(rows) == ["both", "channels", "eps", "plain"] and comparison["settings"]["seeds"] == [1]
    for name in ("channels", "both"):
        export, logdir = rows[name]["export"], os.path.join(out, "runs", name + "-seed1")
        report = json.load(open(os.path.join(export, "report.json")))
        channels = report["channels"]
        assert channels["removed"] > 0 and channels["largest_removed_norm"] < 0.2
        assert channels["reference_max_abs_diff"] <= 1e-3
        assert report["verification"]["top1_agreement"] == 1.0  # every artefact, in a TensorFlow-only process
        assert report["artefacts"]["model.tflite"]["top1_agreement"] == 1.0
        assert report["recomputed_bn"]["images"] == 128  # BatchNorm re-estimated on the sliced weights
        assert report["params_after"] < report["params_before"] == rows["plain"]["params"]
        reduction = Reduction.load(os.path.join(export, "reduction.json"))
        assert reduction.prunes_channels
        assert Plan.load(os.path.join(export, "plan.json")) == reduced_plan(
            Plan.load(os.path.join(logdir, "plan.json")), reduction)
        assert "Channels: %d of %d channel slots removed" % (channels["removed"], channels["slots"]) \
            in open(os.path.join(export, "report.md")).read()
        # the run records the slots' norms each epoch, and a printed command carries the regulariser on
        run = Run.open(logdir)
        last = run.records()[-1]["channels"]
        assert last["slots"] == 176 and 0 <= last["below_threshold"] <= 176 and len(last["norm_percentiles"]) == 5
        assert run.recipe["channel_penalty"] == 0.01
        assert "--channel-penalty 0.01" in str(training_command(run.recipe))
        assert "channel slots below norm 0.05: " in open(os.path.join(out, "logs", "train-%s-seed1.txt" % name)).read()
        assert "channels: %d of %d removed below norm 0.2" % (channels["removed"], channels["slots"]) \
            in open(os.path.join(out, "logs", "export-%s-seed1.txt" % name)).read()
    assert rows["both"]["blocks_removed"] >= 1 and rows["eps"]["epsilon"] is not None
    assert rows["plain"]["channels_removed"] == 0 and rows["plain"]["blocks_removed"] == 0
    text = open(os.path.join(docs, "comparison.md")).read()
    for label in ("plain ResNet", "ε-ResNet (-e auto)", "channels", "ε-ResNet + channels"):
        assert label in text
    assert os.path.getsize(os.path.join(docs, "comparison.png")) > 10000
    assert "ε-ResNet + channels" in proc.stdout


@pytest.mark.parametrize("plan", [cifar_plan(1, image_size=16, width=2), cifar_plan(1, image_size=16, bottleneck=True),
                                  imagenet_plan(18, num_classes=5, image_size=32)],
                         ids=["wrn-10-2", "bottleneck-11", "resnet-18"])
def test_removing_zeroed_channels_is_exact_on_wide_bottleneck_and_imagenet_networks(plan, tmp_path):
    """A third of every group's channels zeroed, and one block's first inner group whole (the block goes): the
    reduced network computes the zeroed one, through 1x1 projection shortcuts and bottlenecks' two inner groups."""
    from eps_resnet.inference import BuiltNetwork, write_variables
    from eps_resnet.reduction import slice_variables
    variables = random_network_variables(plan)
    groups = channel_groups(plan)
    rng = np.random.RandomState(2)
    gone = np.zeros(groups.num_slots, bool)
    emptied = plan.blocks[1].name
    for group, slots in groups.group_slots().items():
        if group == emptied + "/conv1":
            gone[slots] = True
        else:
            gone[rng.choice(slots, len(slots) // 3, replace=False)] = True
    reduction, evidence, zeroed = channels_to_keep(plan, [], masked_variables(groups, variables, gone), threshold=1e-9)
    # a bottleneck whose first inner group is gone loses its second too: ReLU(β) of the dead channels would reach it
    second = groups.group_slots().get(emptied + "/conv2", [])
    assert reduction.removed_blocks == (emptied,)
    assert evidence["removed"] == int(gone.sum()) + int((~gone[second]).sum())
    reduced = reduced_plan(plan, reduction)
    write_variables(zeroed, str(tmp_path / "zeroed"))
    write_variables(slice_variables(plan, reduction, zeroed), str(tmp_path / "sliced"))
    size = plan.image_size
    images = np.random.RandomState(1).randint(0, 256, (8, size, size, 3)).astype(np.uint8)
    full, small = BuiltNetwork(plan, str(tmp_path / "zeroed")), BuiltNetwork(reduced, str(tmp_path / "sliced"))
    try:
        np.testing.assert_allclose(small.logits(images), full.logits(images), rtol=0, atol=1e-4)
    finally:
        full.close()
        small.close()
    assert reduced.num_params < plan.num_params and reduced.flops < plan.flops


@pytest.mark.slow
def test_the_comparison_runs_on_a_cifar_style_data_directory(tmp_path):
    """--dataset svhn --data DIR with two of the methods: the runs train with train_svhn.py on the files the test
    wrote (SVHN's .mat format), export against the plain run, and the tables say what made them."""
    import json
    from tests.datafiles import write_svhn
    from tests.processes import run_script
    data = tmp_path / "svhn"
    data.mkdir()
    write_svhn(str(data), sizes=(("train", 96), ("test", 40), ("extra", 32)))
    out, docs = str(tmp_path / "compare"), str(tmp_path / "docs")
    run_script("-m", "eps_resnet.compare", "--out", out, "--seeds", "3", "--dataset", "svhn", "--data", str(data),
               "--methods", "channels,plain", "--train-args", "-n 1 --max-epoch 2 --steps-per-epoch 10 --batch 16 "
               "--workers 0", "--recompute-bn", "1", "--docs", docs, check=True, timeout=1200)
    comparison = json.load(open(os.path.join(docs, "comparison.json")))
    assert [(r["method"], r["seed"]) for r in comparison["rows"]] == [("plain", 3), ("channels", 3)]
    settings = comparison["settings"]
    assert settings["dataset"] == "svhn" and settings["methods"] == ["plain", "channels"]
    assert settings["train"].startswith("train_svhn.py --data %s -n 1" % data)
    for row in comparison["rows"]:
        run = json.load(open(os.path.join(out, "runs", "%s-seed3" % row["method"], "run.json")))
        assert run["recipe"]["dataset"] == "svhn" and run["recipe"]["data_dir"] == str(data)
        report = json.load(open(os.path.join(row["export"], "report.json")))
        assert report["calibration_images"] == 40 and report["verification"]["top1_agreement"] == 1.0
    assert "train_svhn.py --data" in open(os.path.join(docs, "comparison.md")).read()


def test_bad_comparison_requests(tmp_path):
    from tests.processes import assert_one_line_error, run_scripts
    existing = tmp_path / "existing"
    existing.mkdir()
    new = str(tmp_path / "new")
    requests = [(("-m", "eps_resnet.compare", "--out", str(existing)), ("already exists",)),
                (("-m", "eps_resnet.compare", "--out", new, "--seeds", "1,x"), ("--seeds takes",)),
                (("-m", "eps_resnet.compare", "--out", new, "--seeds", "2,2"), ("distinct",)),
                (("-m", "eps_resnet.compare", "--out", new, "--channel-threshold", "-1"), ("--channel-threshold",)),
                (("-m", "eps_resnet.compare", "--out", new, "--train-args", "-n '1"), ("--train-args",)),
                (("-m", "eps_resnet.compare", "--out", new, "--methods", "eps,channels"), ("add plain",)),
                (("-m", "eps_resnet.compare", "--out", new, "--methods", "plain,blocks"), ("--methods takes",)),
                (("-m", "eps_resnet.compare", "--out", new, "--dataset", "cifar100"), ("needs --data",)),
                (("-m", "eps_resnet.compare", "--out", new, "--data", str(existing)), ("reads no --data",)),
                (("-m", "eps_resnet.compare", "--out", new, "--dataset", "svhn", "--data", new), ("does not exist",))]
    for proc, (_, fragments) in zip(run_scripts(*[command for command, _ in requests]), requests):
        assert_one_line_error(proc, *fragments)
    assert not os.path.exists(new) and os.listdir(str(existing)) == []
