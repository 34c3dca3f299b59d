"""--epsilon auto: the rule on crafted responses and errors, the held-out images, the flags."""
import numpy as np
import pytest

import train_cifar
from eps_resnet import UserError
from eps_resnet.auto_epsilon import candidate_epsilons, choose_epsilon
from eps_resnet.data import build_dataflow, holdout_arrays, holdout_indices, load_arrays


def step_change(knee: float, high: float = 0.20):
    """Changed predictions as the digits show them: none while the gates shut nothing the network needs, then a
    jump."""
    return lambda epsilon: {"changed": 0.0 if epsilon < knee else high}


def test_candidates_are_the_distinct_positive_responses_spread_by_rank():
    maxima = np.arange(1, 41, dtype=np.float32).reshape(8, 5)  # 8 images x 5 blocks, responses 1..40
    assert candidate_epsilons(maxima) == list(range(1, 41))
    # 5 of 40 by rank: positions round(0, 9.75, 19.5, 29.25, 39) = 0, 10, 20, 29, 39
    assert candidate_epsilons(maxima, count=5) == [1, 11, 21, 30, 40]
    # a block whose responses are exactly zero (shut at any ε) and repeats add no candidate
    assert candidate_epsilons(np.array([[0.0, 2.0], [2.0, 3.0]])) == [2.0, 3.0]


def test_the_largest_epsilon_below_the_knee_within_the_tolerance():
    candidates = [float(v) for v in range(1, 41)]
    # 20% of the predictions change from ε 17.5 on: 17 is the last value within any tolerance below 20%
    assert choose_epsilon(candidates, step_change(17.5), tolerance=2.0)[0] == 17.0
    assert choose_epsilon(candidates, step_change(17.5), tolerance=0.0)[0] == 17.0
    # a tolerance wider than the jump: every value passes, the largest is chosen
    assert choose_epsilon(candidates, step_change(17.5), tolerance=25.0)[0] == 40.0
    # 1.5% of the predictions change at 10..19, 3% from 20: tolerance 2 stops at 19, tolerance 1 at 9
    ramp = lambda e: {"changed": 0.015 if 10 <= e < 20 else 0.03 if e >= 20 else 0.0}  # noqa: E731
    assert choose_epsilon(candidates, ramp, tolerance=2.0)[0] == 19.0
    assert choose_epsilon(candidates, ramp, tolerance=1.0)[0] == 9.0


def test_the_scan_stops_at_the_first_value_beyond_the_tolerance():
    # a lucky dip after the knee (30..40 back at no change) is never reached
    dip = lambda e: {"changed": 0.0 if e < 5 or e >= 30 else 0.40}  # noqa: E731
    epsilon, evidence = choose_epsilon([float(v) for v in range(1, 41)], dip, tolerance=2.0)
    assert epsilon == 4.0 and [t["epsilon"] for t in evidence["tried"]] == [1, 2, 3, 4, 5]
    assert evidence["tolerance"] == 2.0 and evidence["tried"][-1] == {"epsilon": 5.0, "changed": 0.40}
    # even the smallest value costs too much: the gates stay open (ε 0)
    assert choose_epsilon([3.0, 4.0], step_change(0.5), tolerance=2.0)[0] == 0.0


def test_held_out_images_are_left_out_of_training_and_spread_over_the_split():
    assert holdout_indices(10, 4).tolist() == [0, 3, 6, 9]
    images, labels = load_arrays("digits", "train")
    held_images, held_labels = holdout_arrays("digits", 256)
    chosen = holdout_indices(len(labels), 256)
    np.testing.assert_array_equal(held_images, images[chosen])
    np.testing.assert_array_equal(held_labels, labels[chosen])
    assert len(set(held_labels.tolist())) == 10  # every class, though files of a split may be sorted by class
    batches = lambda holdout: len(build_dataflow("digits", "train", 1, holdout=holdout))  # noqa: E731
    assert batches(0) == len(labels) and batches(256) == len(labels) - 256
    with pytest.raises(UserError, match="--holdout"):
        holdout_indices(10, 10)


def test_flags():
    recipe, _ = train_cifar.recipe_from_command_line(["--demo", "-e", "auto"])
    assert recipe.auto_epsilon and recipe.epsilon == 0.0 and recipe.epsilon_tolerance == 2.0 and recipe.holdout == 256
    assert recipe.run_name() == "digits-n5-epsauto" and recipe.validate()
    recipe, _ = train_cifar.recipe_from_command_line(["--demo", "-e", "AUTO", "--epsilon-tolerance", "0.5",
                                                      "--holdout", "100"])
    assert (recipe.epsilon_tolerance, recipe.holdout) == (0.5, 100)
    fixed, _ = train_cifar.recipe_from_command_line(["--demo", "-e", "3"])
    assert not fixed.auto_epsilon and fixed.epsilon == 3.0 and fixed.holdout == 0
    for argv, fragment in ((["--demo", "-e", "auto", "--plain"], "no gates"),
                           (["--demo", "--holdout", "10"], "drop it, or pass -e auto"),
                           (["--demo", "-e", "auto", "--epsilon-start", "0"], "--epsilon-start N"),
                           (["--demo", "-e", "auto", "--epsilon-tolerance", "-1"], "--epsilon-tolerance"),
                           (["--demo", "-e", "auto", "--holdout", "0"], "--holdout must be >= 1")):
        with pytest.raises(UserError, match=fragment):
            train_cifar.recipe_from_command_line(argv)[0].validate()
    with pytest.raises(SystemExit):
        train_cifar.recipe_from_command_line(["--demo", "-e", "automatic"])


def test_a_damaged_choice_is_one_error_naming_the_fix(tmp_path):
    from eps_resnet.auto_epsilon import EPSILON_FILE, read_choice
    assert read_choice(str(tmp_path)) is None
    (tmp_path / EPSILON_FILE).write_text('{"epsilon": ')
    with pytest.raises(UserError, match="delete it and resume from a checkpoint of the warm-up"):
        read_choice(str(tmp_path))
    (tmp_path / EPSILON_FILE).write_text('{"tolerance": 2}')
    with pytest.raises(UserError, match="unreadable"):
        read_choice(str(tmp_path))


def test_imagenet_held_out_files_are_left_out_and_read_as_validation_images(tmp_path):
    from tests import datafiles
    data = str(tmp_path / "imagenet")
    datafiles.write_imagenet(data, per_class=4)  # 12 training files, sorted by class
    images, labels = holdout_arrays("imagenet", 3, data, image_size=32)
    assert images.shape == (3, 32, 32, 3) and labels.tolist() == [0, 1, 2]  # files 0, 6, 11: one of each class
    batches = lambda holdout: len(build_dataflow("imagenet", "train", 1, data, image_size=32,  # noqa: E731
                                                 holdout=holdout))
    assert batches(0) == 12 and batches(3) == 9
