import json

import pytest

from eps_resnet import UserError
from eps_resnet.plan import Plan, cifar_plan, imagenet_plan


def test_cifar_resnet110_has_54_blocks_and_1_7m_parameters():
    plan = cifar_plan(18, num_classes=10)
    assert len(plan.blocks) == 54
    assert plan.depth == 110
    assert abs(plan.num_params - 1.7e6) / 1.7e6 < 0.02
    assert plan.block_names[:2] == ["res1.0", "res1.1"]
    assert plan.block_names[-1] == "res3.17"
    assert plan.side_block == "res2.9"


@pytest.mark.parametrize("n,depth", [(18, 110), (33, 200), (83, 500), (125, 752)])
def test_cifar_depths_match_the_paper(n, depth):
    plan = cifar_plan(n)
    assert plan.depth == depth
    assert len(plan.blocks) == 3 * n


@pytest.mark.parametrize("depth,millions", [(50, 25.6), (101, 44.5), (152, 60.2)])
def test_imagenet_parameter_counts(depth, millions):
    plan = imagenet_plan(depth)
    assert abs(plan.num_params / 1e6 - millions) / millions < 0.01
    assert plan.depth == depth


def test_imagenet_structure():
    plan = imagenet_plan(101)
    assert [sum(1 for b in plan.blocks if b.group == g) for g in range(4)] == [3, 4, 23, 3]
    assert plan.side_block == "group2/block8"  # the released code's position for ResNet-101
    first = {b.group: b for b in plan.blocks if b.index == 0}
    assert first[0].preact == "none" and first[0].shortcut == "conv"
    assert all(first[g].preact == "both" and first[g].stride == 2 for g in (1, 2, 3))
    assert plan.blocks[-1].out_channels == 2048
    # ResNet-50 at 224x224 costs about 4 G multiply-accumulates
    assert 3.8e9 < imagenet_plan(50).flops < 4.2e9


def test_cifar_down_sampling_blocks():
    plan = cifar_plan(3)
    b = plan.block("res2.0")
    assert (b.in_channels, b.out_channels, b.stride, b.in_size, b.out_size) == (16, 32, 2, 32, 16)
    assert b.shortcut == "pool_pad" and b.shortcut_params == 0
    assert plan.block("res1.0").preact == "none"
    assert plan.block("res1.1").preact == "residual"


def test_json_round_trip_and_without():
    plan = cifar_plan(2, num_classes=100)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    reduced = plan.without(["res3.1", "res2.0"])
    assert [b.name for b in reduced.discarded_blocks] == ["res2.0", "res3.1"]
    assert Plan.from_json(reduced.to_json()) == reduced
    removed = plan.block("res3.1").residual_params + plan.block("res2.0").residual_params
    assert reduced.num_params == plan.num_params - removed
    assert reduced.flops < plan.flops
    assert reduced.depth == plan.depth - 4
    assert json.loads(reduced.to_json())["blocks"][2]["residual"] is False


def test_removing_an_imagenet_first_block_keeps_its_shortcut_parameters():
    plan = imagenet_plan(50)
    b = plan.block("group1/block0")
    reduced = plan.without([b.name])
    assert reduced.block(b.name).num_params == b.shortcut_params > 0
    assert reduced.num_params == plan.num_params - b.residual_params


def test_wide_resnet_plans_have_the_published_sizes():
    """Zagoruyko & Komodakis (2016), Table 1/2: WRN-28-10 36.5 M parameters, WRN-16-8 11.0 M (CIFAR-10)."""
    wrn28 = cifar_plan(4, width=10)
    assert wrn28.title == "WRN-28-10" and round(wrn28.num_params / 1e6, 1) == 36.5
    assert round(cifar_plan(2, width=8).num_params / 1e6, 1) == 11.0
    assert [b.shortcut for b in wrn28.blocks if b.index == 0] == ["conv"] * 3
    assert all(b.shortcut == "identity" and b.preact == "residual" for b in wrn28.blocks if b.index > 0)
    # width 1 is the paper's ResNet, parameter-free shortcuts
    assert cifar_plan(18, width=1) == cifar_plan(18) and cifar_plan(18).title == "ResNet-110"
    removed = wrn28.without(["res2.0"])
    assert removed.block("res2.0").num_params == 2 * 160 + 160 * 320  # its BN+ReLU and 1x1 shortcut stay


@pytest.mark.parametrize("call", [lambda: cifar_plan(0), lambda: cifar_plan(2, width=0), lambda: cifar_plan(-3), lambda: imagenet_plan(42),
                                  lambda: cifar_plan(2).without(["res9.9"]), lambda: Plan.from_json("{")])
def test_bad_input_names_accepted_values(call):
    with pytest.raises(UserError) as err:
        call()
    assert str(err.value)


@pytest.mark.parametrize("n", [5, 18, 125])
def test_block_tags_sort_as_text_in_network_order(n):
    plan = cifar_plan(n)
    tags = plan.block_tags("is_discarded")
    in_network_order = [tags[name] for name in plan.block_names]
    assert sorted(in_network_order) == in_network_order
    assert len(set(t.split("/")[0] for t in in_network_order)) == 1   # one folder for all blocks


def test_histogram_blocks_are_evenly_spaced_from_first_to_last():
    plan = cifar_plan(125)
    chosen = plan.evenly_spaced_blocks(16)
    kept = plan.kept_blocks
    assert len(chosen) == 16 and chosen[0] == kept[0] and chosen[-1] == kept[-1]
    positions = [kept.index(b) for b in chosen]
    gaps = [b - a for a, b in zip(positions, positions[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert plan.evenly_spaced_blocks(0) == []
    assert plan.evenly_spaced_blocks(1000) == kept


def test_bottleneck_cifar_networks_of_the_preactivation_paper():
    """ResNet-164 and ResNet-1001 (9n+2 layers) as KaimingHe/resnet-1k-layers builds them; the published sizes
    (1.7 M, 10.2 M) count convolutions and the classifier, ours also BatchNorm's scale and shift."""
    r164 = cifar_plan(18, bottleneck=True)
    assert (r164.title, r164.depth, len(r164.blocks)) == ("ResNet-164", 164, 54)
    # by hand: stem 3x3x3x16 + BN; per group the first unit (1x1 shortcut) and 17 others; head BN + 256x10 + 10
    first = [16 * 64 + 16 * 16 + 32 + 9 * 16 * 16 + 32 + 16 * 64,
             2 * 64 + 64 * 128 + 64 * 32 + 64 + 9 * 32 * 32 + 64 + 32 * 128,
             2 * 128 + 128 * 256 + 128 * 64 + 128 + 9 * 64 * 64 + 128 + 64 * 256]
    other = [2 * c + c * m + 2 * m + 9 * m * m + 2 * m + m * c for c, m in ((64, 16), (128, 32), (256, 64))]
    assert r164.num_params == 27 * 16 + 32 + sum(first) + 17 * sum(other) + 2 * 256 + 2560 + 10 == 1703258
    r1001 = cifar_plan(111, bottleneck=True)
    assert (r1001.title, r1001.depth, len(r1001.blocks)) == ("ResNet-1001", 1001, 333)

    def batchnorm(plan):
        return 2 * 16 + 2 * 256 + sum(2 * (b.in_channels if b.preact != "none" else 0) + 2 * sum(b.inner_channels)
                                      for b in plan.blocks)
    assert round((r164.num_params - batchnorm(r164)) / 1e6, 1) == 1.7
    assert abs((r1001.num_params - batchnorm(r1001)) / 10.2e6 - 1) < 0.005
    # the first unit of each group: 1x1 shortcut with the stride, BN+ReLU before both branches, stride on conv1
    b = r164.block("res2.0")
    assert (b.in_channels, b.inner_channels, b.out_channels, b.stride, b.stride_at) == (64, (32, 32), 128, 2, 1)
    assert (b.preact, b.shortcut) == ("both", "conv") and r164.block("res1.0").preact == "none"
    assert b.residual_flops == 16 * 16 * 64 * 32 + 16 * 16 * 9 * 32 * 32 + 16 * 16 * 32 * 128
    assert r164.side_block == "res2.9" and cifar_plan(18, bottleneck=True, width=2).title == "ResNet-164-w2"
    # removing a group's first unit keeps its BN+ReLU and strided 1x1 shortcut
    assert r164.without(["res2.0"]).block("res2.0").num_params == 2 * 64 + 64 * 128


def test_imagenet_resnet200_of_the_preactivation_paper():
    plan = imagenet_plan(200)
    assert [len(plan.blocks_in_group(g)) for g in plan.groups] == [3, 24, 36, 3]
    assert plan.title == "ResNet-200" and plan.depth == 200
    assert abs(plan.num_params / 64.7e6 - 1) < 0.005


def test_the_unit_kind_shapes_a_run_and_names_it():
    """--bottleneck builds another network: a resume may not change it, and runs are named apart."""
    import dataclasses
    import json
    from eps_resnet.recipes import CIFAR10, build_plan
    basic, bottleneck = CIFAR10, dataclasses.replace(CIFAR10, bottleneck=True)
    saved = json.loads(json.dumps(dataclasses.asdict(basic)))
    assert bottleneck.resume_conflicts(saved) == [("--bottleneck", "False", "True")]
    assert bottleneck.run_name() == "cifar10-n18-bottleneck-eps2.5" != basic.run_name()
    assert build_plan(bottleneck).title == "ResNet-164" and build_plan(basic).title == "ResNet-110"
    del saved["bottleneck"]  # a run.json written before the option existed: basic blocks, nothing to compare
    assert bottleneck.resume_conflicts(saved) == []
