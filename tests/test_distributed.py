"""What a Horovod rank derives from its recipe and its launcher's environment (no processes started)."""
import dataclasses
import types

import pytest

from eps_resnet import UserError
from eps_resnet.distributed import env_rank, launched_by_horovodrun
from eps_resnet.recipes import CIFAR10, IMAGENET
from eps_resnet.training import per_rank_recipe


def ranks(size):
    return types.SimpleNamespace(size=size, rank=0)


def test_total_batch_is_split_and_learning_rate_kept_unless_asked():
    r = per_rank_recipe(IMAGENET, ranks(8))
    assert (r.batch, r.batch_is_total) == (32, False)
    assert r.standard_lr == IMAGENET.standard_lr and r.fast_lr == IMAGENET.fast_lr
    scaled = per_rank_recipe(dataclasses.replace(IMAGENET, scale_lr=True), ranks(8))
    assert scaled.standard_lr[0] == (0, pytest.approx(0.8)) and scaled.standard_lr[-1] == (95, pytest.approx(8e-5))


def test_per_gpu_batch_stays_per_process():
    r = per_rank_recipe(CIFAR10, ranks(4))
    assert r.batch == 128 and r.standard_lr == CIFAR10.standard_lr


def test_total_batch_that_does_not_divide():
    with pytest.raises(UserError, match="--batch 256 .total. does not divide over 3 Horovod processes"):
        per_rank_recipe(IMAGENET, ranks(3))


def test_launcher_environment(monkeypatch):
    for key in ("HOROVOD_RANK", "HOROVOD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert not launched_by_horovodrun() and env_rank() == 0
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert not launched_by_horovodrun()
    monkeypatch.setenv("HOROVOD_SIZE", "4")
    monkeypatch.setenv("HOROVOD_RANK", "3")
    assert launched_by_horovodrun() and env_rank() == 3


def test_trainer_choices_are_checked():
    with pytest.raises(UserError, match="--trainer must be one of auto, replicated, horovod, got 'mpi'"):
        dataclasses.replace(CIFAR10, trainer="mpi").validate()
    with pytest.raises(UserError, match="drop --gpu"):
        dataclasses.replace(CIFAR10, trainer="horovod", gpus=(0, 1)).validate()


PINNED_SESSION = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import eps_resnet
from eps_resnet.distributed import cores_per_process
from eps_resnet.recipes import CIFAR10, build_plan
from eps_resnet.tfcompat import tf
from eps_resnet.training import session_creator
with tf.Graph().as_default():
    config = session_creator(CIFAR10, plan=build_plan(CIFAR10)).create_session()._config
print(cores_per_process(), cores_per_process(2), config.intra_op_parallelism_threads,
      config.inter_op_parallelism_threads)
"""


def test_training_session_uses_the_cores_this_process_may_use():
    """The session runs each op of a large network on every core of the process's affinity, a small network's
    on one (and independent ops side by side on every core; tensorpack's default: one thread per op); ranks
    sharing an unpinned machine split it, a process pinned to fewer cores (by a launcher) keeps its own.
    Grappler runs on a CPU only when asked (--grappler)."""
    import os
    import subprocess
    import sys
    from eps_resnet.distributed import cores_per_process
    from eps_resnet.recipes import DIGITS_DEMO, build_plan
    from eps_resnet.tfcompat import tf
    from eps_resnet.training import session_creator
    cores = len(os.sched_getaffinity(0))
    assert cores_per_process() == cores
    if cores >= (os.cpu_count() or 1):
        assert cores_per_process(2) == max(1, cores // 2)
    with tf.Graph().as_default():
        config = session_creator(CIFAR10, plan=build_plan(CIFAR10)).create_session()._config
    # ResNet-110 at batch 128: 300 M multiply-accumulates per layer, every core for each op
    assert config.intra_op_parallelism_threads == config.inter_op_parallelism_threads == cores
    digits = session_creator(DIGITS_DEMO, plan=build_plan(DIGITS_DEMO))
    assert (digits.threads, digits.ops_at_once) == (1, cores)  # the demo's 16x16 digits at batch 32: 17 M
    assert session_creator(CIFAR10).config.graph_options.rewrite_options.disable_meta_optimizer  # no GPU here
    asked = session_creator(dataclasses.replace(CIFAR10, grappler=True))
    assert not asked.config.graph_options.rewrite_options.disable_meta_optimizer

    out = subprocess.run([sys.executable, "-c", PINNED_SESSION], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].split() == ["1", "1", "1", "1"]  # pinned: its own core, not half of it
