"""A printed training command, parsed by its script's own parser, gives back the recipe it was made from."""
import dataclasses
import json
import os
import shlex

import pytest

import train_cifar
import train_imagenet
import train_svhn
from eps_resnet import UserError
from eps_resnet.commands import training_command

SCRIPTS = {"train_cifar.py": train_cifar, "train_svhn.py": train_svhn, "train_imagenet.py": train_imagenet}


def parsed(command: str):
    """The recipe the script of a printed command would train (its parser, not a copy of it)."""
    argv = shlex.split(command)
    assert argv[0] == "python"
    recipe, dry_run = SCRIPTS[argv[1]].recipe_from_command_line(argv[2:])
    assert not dry_run
    return recipe


def recorded(recipe) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(recipe)))  # as run.json holds it


RUNS = [
    "train_cifar.py --demo",
    "train_cifar.py --demo -n 1 --batch 16 --steps-per-epoch 3 --max-epoch 2 --mean-from all --no-side --seed 5 "
    "--epsilon-start 0 -e 7.125 --workers 1 --histogram-blocks 0",
    "train_cifar.py --demo --plain --width 2 --logdir 'runs/with space'",
    "train_cifar.py --data /d/cifar --cifar100 -n 4 --width 10 --bottleneck -e 2.5 --xla --grappler",
    "train_cifar.py --data /d/cifar -n 18 -e 0.1234567891",
    "train_svhn.py --data /d/svhn -n 3 --jitter released --mean-from all --steps-per-epoch 7 --trainer horovod "
    "--scale-lr",
    "train_imagenet.py --data /d/imagenet -d 200 --image-size 64 --aug released --batch 32 --fake --max-epoch 3",
    "train_imagenet.py --data /d/imagenet -d 18 --plain --seed 0",
    "train_cifar.py --demo -e auto --epsilon-tolerance 0.5 --holdout 100 --epsilon-start 2",
]


@pytest.mark.parametrize("run", RUNS)
def test_a_runs_command_trains_the_same_recipe(run):
    script, *argv = shlex.split(run)
    recipe, _ = SCRIPTS[script].recipe_from_command_line(argv)
    command = training_command(recorded(recipe))
    assert parsed(str(command)) == recipe
    assert not command.unreproducible and command.note() == ""


@pytest.mark.parametrize("run", RUNS[:2] + RUNS[3:4] + RUNS[5:6] + RUNS[-1:])
def test_a_retraining_command_changes_only_what_it_is_asked_to(run):
    """(As the frontier and the export ask: a run that chose its ε retrains at a fixed one.)"""
    script, *argv = shlex.split(run)
    recipe, _ = SCRIPTS[script].recipe_from_command_line(argv)
    changes = dict(epsilon=3.75, epsilon_start_epoch=0, load="/runs/the run", logdir="/runs/the run-eps3.75",
                   epsilon_tolerance=None, holdout=0)
    assert parsed(str(training_command(recorded(recipe), **changes))) == dataclasses.replace(recipe, **changes)


def test_settings_no_flag_can_set_are_named():
    recipe, _ = train_cifar.recipe_from_command_line(["--demo"])
    saved = dict(recorded(recipe), weight_decay=1e-4, side_weight=0.05, steps_per_epoch=None)
    command = training_command(saved)
    assert [u.split()[0] for u in command.unreproducible] == ["side_weight", "steps_per_epoch", "weight_decay"]
    assert "weight_decay 0.0001 (0.004)" in command.note()
    # what the flags can say, they still say
    assert parsed(str(command)) == dataclasses.replace(recipe, steps_per_epoch=100)


def test_the_seed_flag():
    assert train_cifar.recipe_from_command_line(["--demo"])[0].seed == 1
    assert train_cifar.recipe_from_command_line(["--demo", "--seed", "4"])[0].seed == 4
    assert train_cifar.recipe_from_command_line(["--data", "x"])[0].seed is None
    with pytest.raises(SystemExit):
        train_cifar.recipe_from_command_line(["--demo", "--seed", "one"])
    with pytest.raises(UserError):
        train_cifar.recipe_from_command_line(["--demo", "--cifar100"])


def test_no_gpu_flag_means_tensorflow_sees_no_gpu(monkeypatch):
    """--help promises the CPU without --gpu: a visible GPU would get the graph, laid out for the CPU (NHWC)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    train_cifar.recipe_from_command_line(["--demo"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    # a Horovod rank keeps them: it takes the GPU of its local rank
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    train_cifar.recipe_from_command_line(["--demo"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
