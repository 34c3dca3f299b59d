"""The per-epoch policies: the adaptive learning rate of the paper (Sec. 4), driven by given discarded_cnt
histories; ε's warm-up; the weight decay's steps."""
import pytest

from eps_resnet.schedule import EpsilonPolicy, LearningRatePolicy, WeightDecayPolicy
from eps_resnet.recipes import CIFAR_FAST_LR, CIFAR_STANDARD_LR, SVHN_FAST_LR, SVHN_STANDARD_LR


def lr_during_epochs(policy, counts, initial=0.1):
    """Learning rate in force during epochs 1..len(counts)+1, and the epochs where a reset happened."""
    lr = policy.scheduled_value(0) or initial
    during, resets = {1: lr}, []
    for epoch, cnt in enumerate(counts, start=1):
        value = policy.end_of_epoch(epoch, cnt)
        if value is not None:
            lr = value
        if policy.last_reset == epoch:
            resets.append(epoch)
        during[epoch + 1] = lr
    return during, resets


def cifar_policy(**kw):
    return LearningRatePolicy(CIFAR_STANDARD_LR, CIFAR_FAST_LR, adaptive=True, **kw)


def test_without_discards_the_standard_schedule_is_followed():
    during, resets = lr_during_epochs(cifar_policy(), [0.0] * 310)
    assert resets == []
    assert during[82] == 0.1 and during[83] == 0.01       # set when epoch 82 ends
    assert during[123] == 0.01 and during[124] == 0.001
    assert during[300] == 0.001 and during[301] == 0.0002


def test_a_new_discard_resets_to_the_fast_schedule_shifted_by_the_epoch():
    counts = [0.0] * 99 + [1.0] + [1.0] * 200           # a block is discarded during epoch 100
    during, resets = lr_during_epochs(cifar_policy(), counts)
    assert resets == [100]
    assert during[100] == 0.01 and during[101] == 0.1    # standard had dropped to 0.01 at 82; reset to 0.1
    assert during[141] == 0.1 and during[142] == 0.01    # fast schedule: 41 epochs after the reset
    assert during[161] == 0.01 and during[162] == 0.001  # 61
    assert during[250] == 0.001 and during[251] == 0.0002  # 150
    assert during[124] == 0.1                            # the standard drop at 123 no longer applies


def test_threshold_is_honoured():
    counts = [0.0] * 10 + [0.6] * 5 + [1.3] * 5            # +0.6, then +0.7: never one whole block at once
    _, resets = lr_during_epochs(cifar_policy(), counts)
    assert resets == []
    _, resets = lr_during_epochs(cifar_policy(threshold=0.5), counts)
    assert resets == [11, 16]


def test_k_is_honoured():
    # k = 2 compares the value of two epochs ago: a rise is seen in both of the next two epochs,
    # but no reset may follow another within k epochs
    counts = [0.0] * 5 + [1.0] * 3 + [2.0] * 4
    _, resets = lr_during_epochs(cifar_policy(k=2), counts)
    assert resets == [6, 9]
    _, resets = lr_during_epochs(cifar_policy(k=1), counts)
    assert resets == [6, 9]
    # a steady rise: k=1 resets every epoch, k=2 at most every other epoch
    steady = [float(i) for i in range(8)]
    assert lr_during_epochs(cifar_policy(k=1), steady)[1] == [2, 3, 4, 5, 6, 7, 8]
    assert lr_during_epochs(cifar_policy(k=2), steady)[1] == [3, 5, 7]


def test_first_epochs_follow_the_schedule():
    # the first epoch has no predecessor to compare with, even if blocks are gone already
    _, resets = lr_during_epochs(cifar_policy(), [5.0, 5.0, 5.0])
    assert resets == []


def test_svhn_schedules():
    policy = LearningRatePolicy(SVHN_STANDARD_LR, SVHN_FAST_LR, adaptive=True)
    during, resets = lr_during_epochs(policy, [0.0] * 29 + [2.0] * 30)
    assert during[20] == 0.1 and during[21] == 0.01 and during[29] == 0.001
    assert resets == [30] and during[31] == 0.1          # reset to the fast schedule's first value
    assert during[40] == 0.1 and during[41] == 0.01      # (1, 0.1), (10, 0.01) shifted by 30: 0.01 from epoch 40 on


def test_not_adaptive_ignores_discards():
    policy = LearningRatePolicy(CIFAR_STANDARD_LR, CIFAR_FAST_LR, adaptive=False)
    during, resets = lr_during_epochs(policy, [0.0, 3.0, 6.0] + [9.0] * 90)
    assert resets == [] and during[83] == 0.01


def test_state_rebuilt_from_records_continues_identically():
    counts = [0.0] * 20 + [1.0] * 10 + [2.5] * 30
    straight = cifar_policy()
    full, _ = lr_during_epochs(straight, counts)
    # records of the first 25 epochs, as EpochRecorder writes them (with a duplicated, newer epoch 25)
    first = cifar_policy()
    records = []
    for epoch, cnt in enumerate(counts[:25], start=1):
        first.end_of_epoch(epoch, cnt)
        records.append({"epoch": epoch, "discarded_cnt": cnt, "lr_reset": first.last_reset == epoch})
    records.append(dict(records[-1]))
    resumed = LearningRatePolicy.from_records(records, standard=CIFAR_STANDARD_LR, fast=CIFAR_FAST_LR, adaptive=True)
    assert resumed.last_reset == 21 and len(resumed.history) == 25
    lr = full[26]
    for epoch, cnt in enumerate(counts[25:], start=26):
        value = resumed.end_of_epoch(epoch, cnt)
        lr = value if value is not None else lr
        assert lr == full[epoch + 1], epoch


def test_epsilon_policy_keeps_the_gates_open_through_the_warm_up():
    policy = EpsilonPolicy(2.5, start=150)
    assert policy.value_at_start(0) == 0.0 and policy.value_at_start(149) == 0.0
    assert policy.end_of_epoch(149) == 0.0 and policy.end_of_epoch(150) == 2.5   # in force from epoch 151
    assert policy.value_at_start(150) == 2.5 and policy.value_at_start(400) == 2.5
    assert EpsilonPolicy(1.5).value_at_start(0) == 1.5


def test_weight_decay_steps_down_from_the_epoch_whose_first_step_passes_the_boundary():
    # SVHN: 604,388 images at batch 128 are 4,721 steps an epoch; x0.2 every 480,000 steps (the released code)
    policy = WeightDecayPolicy(2e-4, every=480000, steps_per_epoch=4721)
    assert policy.value_at_start(0) == 2e-4
    assert policy.end_of_epoch(101) == 2e-4            # epoch 102 starts at step 476,821: not yet
    assert policy.end_of_epoch(102) == 2e-4 * 0.2      # epoch 103 starts at step 481,542
    assert policy.value_at_start(204) == pytest.approx(2e-4 * 0.2 ** 2)  # step 963,084
    assert policy.value_at_start(203) == pytest.approx(2e-4 * 0.2)       # step 958,363
    assert WeightDecayPolicy(4e-3, every=None, steps_per_epoch=100).end_of_epoch(10 ** 6) == 4e-3
