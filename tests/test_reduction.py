"""Pruning as a value: coupled channel groups, the reduced plan's counts, and weights sliced for it."""
import json

import numpy as np
import pytest

from eps_resnet import UserError
from eps_resnet.plan import cifar_plan, imagenet_plan
from eps_resnet.reduction import (REDUCTION_FILE, Reduction, channel_layout, kept_positions, reduced_plan,
                                  slice_variables)


def test_cifar_zero_padding_carries_channels_on_and_pads_start_groups():
    plan = cifar_plan(2)
    layout = channel_layout(plan)
    assert layout.trunk_groups() == ["conv0", "res2.0/pad", "res3.0/pad"]
    assert layout.group_sizes["res2.0/pad"] == 16 and layout.group_sizes["res3.0/pad"] == 32
    assert sorted(g for g in layout.group_sizes if g.endswith("/conv1")) == sorted(b + "/conv1" for b in plan.block_names)
    # res2.0 pads 8 channels before and 8 after the 16 it carries on: [pad 0-7 | conv0 0-15 | pad 8-15]
    out = layout.tensors["res2.0/out"]
    assert out[:8] == tuple(("res2.0/pad", i) for i in range(8))
    assert out[8:24] == tuple(("conv0", i) for i in range(16))
    assert out[24:] == tuple(("res2.0/pad", i) for i in range(8, 16))
    assert layout.tensors["res3.1/out"][16:48] == out  # res3.0 pads 16 each side
    assert layout.tensors["res1.1/out"] == layout.tensors["conv0"]  # identity shortcuts tie the whole group


def test_wide_and_imagenet_conv_shortcuts_start_groups_and_bottlenecks_have_two_inner_groups():
    wide = channel_layout(cifar_plan(1, width=2))
    assert wide.trunk_groups() == ["conv0", "res1.0/shortcut", "res2.0/shortcut", "res3.0/shortcut"]
    assert wide.group_sizes["res1.0/shortcut"] == 32
    resnet50 = imagenet_plan(50)
    layout = channel_layout(resnet50)
    assert layout.trunk_groups() == ["conv0"] + ["group%d/block0/shortcut" % g for g in range(4)]
    assert layout.group_sizes["group1/block2/conv1"] == 128 and layout.group_sizes["group1/block2/conv2"] == 128
    assert len(layout.group_sizes) == 5 + 2 * len(resnet50.blocks)


def test_reduced_counts_checked_by_hand():
    """ResNet-8 (n=1), 32x32: the stem keeps 8 of 16 channels, res1.0's inner convolution 4 of 16."""
    plan = cifar_plan(1)
    reduced = reduced_plan(plan, Reduction(kept_channels={"conv0": tuple(range(8)), "res1.0/conv1": (0, 5, 6, 15)}))
    assert [(b.in_channels, b.inner_channels, b.out_channels) for b in reduced.blocks] == [
        (8, (4,), 8), (8, (32,), 24), (24, (64,), 56)]
    assert [b.padding for b in reduced.blocks[1:]] == [(8, 8), (16, 16)]
    stem = 3 * 3 * 3 * 8 + 2 * 8
    res10 = 9 * 8 * 4 + 2 * 4 + 9 * 4 * 8
    res20 = 2 * 8 + 9 * 8 * 32 + 2 * 32 + 9 * 32 * 24
    res30 = 2 * 24 + 9 * 24 * 64 + 2 * 64 + 9 * 64 * 56
    head = 2 * 56 + 56 * 10 + 10
    assert reduced.num_params == stem + res10 + res20 + res30 + head == 57050
    flops = 32 * 32 * 27 * 8 + 32 * 32 * 9 * (8 * 4 + 4 * 8) + 16 * 16 * 9 * (8 * 32 + 32 * 24) \
        + 8 * 8 * 9 * (24 * 64 + 64 * 56) + 56 * 10
    assert reduced.flops == flops == 6119984
    # padded channels kept unevenly: 2 of the 8 before, 3 of the 8 after
    uneven = reduced_plan(plan, Reduction(kept_channels={"res2.0/pad": (0, 1, 8, 9, 10)}))
    assert uneven.blocks[1].padding == (2, 3) and uneven.blocks[2].padding == (16, 16)
    assert uneven.blocks[2].in_channels == 21
    # nothing named: the plan itself; blocks only: Plan.without
    assert reduced_plan(plan, Reduction()) == plan
    assert reduced_plan(plan, Reduction(("res2.0",))) == plan.without(["res2.0"])


def test_a_bottlenecks_inner_convolutions_reduce_separately():
    plan = imagenet_plan(50)
    reduced = reduced_plan(plan, Reduction(kept_channels={"group0/block1/conv2": tuple(range(10))}))
    block = reduced.block("group0/block1")
    assert block.inner_channels == (64, 10)
    assert block.residual_params == 2 * 256 + 256 * 64 + 2 * 64 + 9 * 64 * 10 + 2 * 10 + 10 * 256
    assert plan.num_params - reduced.num_params == plan.block("group0/block1").residual_params - block.residual_params


def test_reduction_files_and_mistakes(tmp_path):
    plan = cifar_plan(1)
    reduction = Reduction(("res1.0",), {"res3.0/pad": (1, 2, 30)})
    reduction.save(str(tmp_path / REDUCTION_FILE))
    assert Reduction.load(str(tmp_path / REDUCTION_FILE)) == reduction
    assert json.load(open(tmp_path / REDUCTION_FILE)) == {"removed_blocks": ["res1.0"],
                                                         "kept_channels": {"res3.0/pad": [1, 2, 30]}}
    for bad, message in ((Reduction(("res9.0",)), "does not have"),
                         (Reduction(kept_channels={"res4.0/pad": (0,)}), "not a channel group"),
                         (Reduction(("res1.0",), {"res1.0/conv1": (0,)}), "not a channel group"),
                         (Reduction(kept_channels={"conv0": ()}), "keeps no channel"),
                         (Reduction(kept_channels={"conv0": (3, 1)}), "distinct ascending"),
                         (Reduction(kept_channels={"conv0": (16,)}), "below 16")):
        with pytest.raises(UserError, match=message):
            reduced_plan(plan, bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="not JSON"):
        Reduction.load(str(tmp_path / "broken.json"))


def test_slicing_keeps_the_channels_of_every_variable_and_its_momentum():
    plan = cifar_plan(1)
    reduction = Reduction(("res1.0",), {"conv0": (0, 3), "res3.0/conv1": (5,)})
    rng = np.random.RandomState(0)
    shapes = {"conv0/W": (3, 3, 3, 16), "conv0/W/Momentum": (3, 3, 3, 16), "res1.0/conv1/W": (3, 3, 16, 16),
              "res3.0/conv1/W": (3, 3, 32, 64), "res3.0/conv2/W": (3, 3, 64, 64), "res3.0/preact/bn/gamma": (32,),
              "linear/W": (64, 10), "linear/b": (10,), "global_step": ()}
    variables = {n: np.asarray(rng.rand(*s), np.float32) for n, s in shapes.items()}
    sliced = slice_variables(plan, reduction, variables)
    assert "res1.0/conv1/W" not in sliced
    positions = kept_positions(plan, reduction)
    assert positions["conv0"] == [0, 3] and positions["res2.0/out"] == list(range(8)) + [8, 11] + list(range(24, 32))
    np.testing.assert_array_equal(sliced["conv0/W"], variables["conv0/W"][..., [0, 3]])
    np.testing.assert_array_equal(sliced["conv0/W/Momentum"], variables["conv0/W/Momentum"][..., [0, 3]])
    np.testing.assert_array_equal(sliced["res3.0/conv1/W"], variables["res3.0/conv1/W"][:, :, positions["res2.0/out"]][..., [5]])
    np.testing.assert_array_equal(sliced["res3.0/preact/bn/gamma"], variables["res3.0/preact/bn/gamma"][positions["res2.0/out"]])
    np.testing.assert_array_equal(sliced["linear/W"], variables["linear/W"][positions["res3.0/out"]])
    assert sliced["linear/b"] is variables["linear/b"] and sliced["global_step"] is variables["global_step"]


@pytest.mark.parametrize("width", [1, 2])  # zero-padding shortcuts; 1x1 convolution shortcuts (WRN)
def test_the_sliced_network_computes_the_full_one_with_the_pruned_channels_zeroed(tmp_path, width):
    """Exact where pruning is exact: a channel whose kernels and BatchNorm scale and shift are zero is zero
    everywhere it goes, so the full network with such channels computes what the sliced network computes."""
    from eps_resnet.inference import build_inference_graph, read_variables, slice_checkpoint, write_variables
    from eps_resnet.prune import network_logits
    from eps_resnet.reduction import variable_axes
    from eps_resnet.tfcompat import tfv1

    plan = cifar_plan(1, image_size=16, width=width)
    rng = np.random.RandomState(width)
    net = build_inference_graph(plan)
    with net.graph.as_default(), net.session() as sess:
        variables = dict(zip([v.op.name for v in tfv1.global_variables()], sess.run(tfv1.global_variables())))
    for name in variables:  # BatchNorm that is not the identity, so that a wrong channel shows
        if name.endswith(("gamma", "beta", "mean/EMA")):
            variables[name] = np.asarray(rng.uniform(-1, 1, variables[name].shape), np.float32)
        elif name.endswith("variance/EMA"):
            variables[name] = np.asarray(rng.uniform(0.5, 2, variables[name].shape), np.float32)
    full = str(tmp_path / "full")
    write_variables(variables, full)

    layout = channel_layout(plan.without(["res2.0"]))
    kept = {g: tuple(sorted(rng.choice(n, max(1, n // 3), replace=False))) for g, n in layout.group_sizes.items()}
    reduction = Reduction(("res2.0",), kept)
    positions = kept_positions(plan, reduction)
    zeroed = dict(variables)
    for name, tensors in variable_axes(plan.without(["res2.0"])).items():
        produced = tensors[-1]  # a kernel's output channels; BatchNorm's one axis
        if name in zeroed and name.endswith(("/W", "gamma", "beta")) and produced:  # (no side head here)
            dropped = sorted(set(range(zeroed[name].shape[-1])) - set(positions[produced]))
            zeroed[name] = zeroed[name].copy()
            zeroed[name][..., dropped] = 0
    write_variables(zeroed, str(tmp_path / "zeroed"))

    reduced = slice_checkpoint(plan, reduction, full, str(tmp_path / "sliced"))
    assert reduced.num_params < plan.without(["res2.0"]).num_params / 2
    assert read_variables(str(tmp_path / "sliced"))["conv0/W"].shape == (3, 3, 3, len(kept["conv0"]))
    images = rng.randint(0, 256, (8, 16, 16, 3)).astype(np.uint8)
    expected = network_logits(plan.without(["res2.0"]), str(tmp_path / "zeroed"), images)
    np.testing.assert_allclose(network_logits(reduced, str(tmp_path / "sliced"), images), expected, rtol=1e-4, atol=1e-4)
    assert np.abs(network_logits(plan.without(["res2.0"]), full, images) - expected).max() > 1e-2  # zeroing mattered


def test_one_switchable_graph_computes_every_block_removal(tmp_path):
    """The frontier evaluates each of its points on one graph whose input says which blocks to remove: the same
    logits as the reduced network built for that removal."""
    from eps_resnet.inference import BuiltNetwork, build_inference_graph, write_variables
    from eps_resnet.tfcompat import tfv1
    plan = cifar_plan(1, image_size=16)
    net = build_inference_graph(plan)
    with net.graph.as_default(), net.session() as sess:
        variables = dict(zip([v.op.name for v in tfv1.global_variables()], sess.run(tfv1.global_variables())))
    write_variables(variables, str(tmp_path / "weights"))
    images = np.random.RandomState(1).randint(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    switchable = BuiltNetwork(plan, str(tmp_path / "weights"), switchable=True)
    for removed in ([], ["res2.0"], ["res1.0", "res3.0"]):
        reduced = BuiltNetwork(plan.without(removed), str(tmp_path / "weights"))
        np.testing.assert_array_equal(switchable.logits(images, removed=removed), reduced.logits(images))
        reduced.close()
    with pytest.raises(ValueError, match="not switchable"):
        BuiltNetwork(plan, str(tmp_path / "weights")).logits(images, removed=["res2.0"])
