"""Training in several processes with Horovod (one process per GPU, on one machine or many).

Rank 0 (the chief) alone owns the log directory. Everything a run decides before the first step (a usable
log directory, where to resume, the discard history that drives the adaptive learning rate) is decided on
rank 0 and handed to the other ranks, and any rank's start-up error stops every rank with exit code 2.
During training the ranks agree on gate statistics through an allreduce (gate_callbacks.GateAgreement).
"""
import os
import pickle
import signal
import sys

import numpy as np

from . import UserError

# Launchers set one of these in every process they start: horovodrun with Gloo, then MPI implementations.
_RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
_SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launched_by_horovodrun() -> bool:
    """True inside a process started by horovodrun (or mpirun) with more than one process."""
    return any(int(os.environ.get(k, "1")) > 1 for k in _SIZE_VARIABLES)


def env_rank() -> int:
    """This process's rank as the launcher announced it (0 when not launched by one); needs no Horovod."""
    for key in _RANK_VARIABLES:
        if key in os.environ:
            return int(os.environ[key])
    return 0


def cores_per_process(processes_on_machine: int = 1) -> int:
    """The cores one training process should keep busy: those it may run on (its affinity, which launchers and
    containers restrict), shared with the machine's other training processes unless a launcher already pinned it
    to its own cores (its affinity is then smaller than the machine)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if processes_on_machine > 1 and usable >= (os.cpu_count() or usable):
        usable //= processes_on_machine
    return max(1, usable)


def import_horovod():
    try:
        import horovod.tensorflow as hvd
    except ImportError as e:
        raise UserError("--trainer horovod needs Horovod, which is not installed (%s); run 'make horovod' "
                        "(see README, 'Several machines')" % e)
    return hvd


class Ranks:
    """The processes (ranks) of a Horovod run, seen from one of them."""

    def __init__(self):
        self.hvd = import_horovod()
        self.hvd.init()
        self.rank = self.hvd.rank()
        self.size = self.hvd.size()
        self.local_rank = self.hvd.local_rank()

    @property
    def is_chief(self):
        return self.rank == 0

    def session_config(self):
        """Session options for this process: its own GPU, and a share of the CPU threads of its machine."""
        from .tfcompat import tfv1
        config = tfv1.ConfigProto(allow_soft_placement=True)
        config.gpu_options.visible_device_list = str(self.local_rank)
        config.gpu_options.allow_growth = True
        config.intra_op_parallelism_threads = config.inter_op_parallelism_threads = self.cores
        return config

    @property
    def cores(self) -> int:
        """The cores of this rank: its machine's (or its pinned set), shared with the ranks on the machine."""
        return cores_per_process(self.hvd.local_size())

    def allgather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank (any picklable objects)."""
        from .tfcompat import session, tf, tfv1
        payload = np.frombuffer(pickle.dumps(obj), np.uint8)
        with tf.Graph().as_default():
            data = tfv1.placeholder(tf.uint8, [None])
            sizes = self.hvd.allgather(tf.reshape(tf.size(data), [1]), name="eps_resnet_gather_sizes")
            joined = self.hvd.allgather(data, name="eps_resnet_gather_data")
            with session(config=self.session_config()) as sess:
                sizes, joined = sess.run([sizes, joined], {data: payload})
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [pickle.loads(joined[a:b].tobytes()) for a, b in zip(bounds[:-1], bounds[1:])]

    def agree(self, step):
        """Run `step()` on every rank; it returns (this rank's result, what it shares or None). Returns (this
        rank's result, rank 0's shared part) on every rank; only the shared part travels, so it must pickle.

        If `step` raises a UserError on any rank, every rank raises one: rank 0 with the message (its own, or
        the first failing rank's, prefixed with that rank), the others quietly, so one line is printed and
        every rank exits with code 2 instead of waiting for a rank that gave up.
        """
        local = None
        try:
            local, shared = step()
            outcome = (True, shared)
        except UserError as e:
            outcome = (False, str(e))
        # When the first rank exits, horovodrun stops the others with SIGTERM: from here on, a rank stopped
        # that way must still exit with the agreed code 2, not as killed by a signal.
        previous = signal.signal(signal.SIGTERM, _exit_with_code_2)
        outcomes = self.allgather(outcome)
        failures = [(rank, message) for rank, (ok, message) in enumerate(outcomes) if not ok]
        if not failures:
            signal.signal(signal.SIGTERM, previous)
        else:
            rank, message = failures[0]
            raise UserError(message if rank == 0 else "rank %d: %s" % (rank, message), quiet=not self.is_chief)
        return local, outcomes[0][1]


def _exit_with_code_2(signum, frame):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)
