"""The one place that imports TensorFlow and tensorpack, quietly and with the fixes this stack needs.

TensorFlow's C++ runtime prints a handful of lines (CUDA probing, oneDNN notice) while it loads,
before any log level applies. We capture file descriptor 2 during the import and replay the capture
only if the import fails, so a broken install still explains itself. CUDA's first probe for GPUs, later,
prints an error line on every machine without a GPU driver; visible_gpus() makes that probe quietly and keeps
what it said for an error that needs it (--gpu on a machine whose GPUs are not visible).
"""
import os
import sys
import tempfile

# Importing this module runs eps_resnet/__init__ first (its parent package): legacy Keras is selected.


def _quietly(work):
    """(work(), what the C++ runtime wrote to stderr meanwhile); replayed if work() fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            result = work()
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return result, capture.read().decode("utf-8", "replace")


def _import_tensorflow():
    import tensorflow
    import tensorpack  # noqa: F401  (loads TensorFlow's Keras layers: also noisy)
    return tensorflow


tf = _quietly(_import_tensorflow)[0]
tfv1 = tf.compat.v1
tf.get_logger().setLevel("ERROR")

_gpu_probe = None  # (GPUs, what CUDA said while probing), after the first visible_gpus()


def visible_gpus() -> list:
    """The GPUs TensorFlow sees; the first call in a process probes CUDA quietly (see the module's docstring)."""
    global _gpu_probe
    if _gpu_probe is None:
        _gpu_probe = _quietly(lambda: tf.config.list_physical_devices("GPU"))
    return _gpu_probe[0]


def gpu_probe_message() -> str:
    """The last line CUDA printed while looking for GPUs ("" when it said nothing)."""
    visible_gpus()
    lines = [line.split("] ", 1)[-1] for line in _gpu_probe[1].splitlines() if line.strip()]
    return lines[-1] if lines else ""


def session(**kwargs):
    """tfv1.Session(**kwargs), after the quiet GPU probe (a session's creation would otherwise make it aloud)."""
    visible_gpus()
    return tfv1.Session(**kwargs)


# tensorpack's export helper still calls the TF1 graph_util module.
import tensorpack.tfutils.export as _tp_export  # noqa: E402

_tp_export.graph_util = tfv1.graph_util

# Graph building in linear time. TensorFlow 2 enables "tensor equality", under which every hash or == of a
# variable first asks whether it runs eagerly (a walk of the context stack). tf-keras's legacy layers, under
# every tensorpack layer, put all global variables in a set and search the trainable list on each add_weight,
# so a deep network paid for that walk O(variables²) times (README, "Several GPUs and deep networks"). TensorFlow
# 1, which tensorpack was written for, compared tensors by identity; restoring that makes the same checks cost
# nothing and leaves graph-mode behaviour unchanged.
tfv1.disable_tensor_equality()
# That still leaves a Python-level __hash__ and __eq__ on every variable, called about 30 million times while the
# 752-layer network is built (tf-keras turns the global variables into a set on each add_weight). With tensor
# equality off they are object identity, which is exactly what object's own C-level methods compute.
from tensorflow.python.ops import variables as _variables  # noqa: E402

_variables.Variable.__hash__ = object.__hash__
_variables.Variable.__eq__ = object.__eq__
_variables.Variable.__ne__ = object.__ne__

# tensorpack's HorovodTrainer calls tf.global_variables(), which TensorFlow 2 keeps only under compat.v1.
if not hasattr(tf, "global_variables"):
    tf.global_variables = tfv1.global_variables


# Dataflow worker processes must die with the process that started them, however it dies (kill -9 included).
# tensorpack asks the kernel for that only when the python-prctl package is importable (it needs a C compiler
# and libcap headers to install); the same prctl() call through ctypes needs nothing.
def _die_with_parent(_warn=True):
    import ctypes
    import multiprocessing
    import signal
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: tensorpack's own clean-up at exit still applies
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before the call above
        os._exit(1)


import tensorpack.dataflow.parallel as _tp_parallel  # noqa: E402
import tensorpack.dataflow.parallel_map as _tp_parallel_map  # noqa: E402
import tensorpack.utils.concurrency as _tp_concurrency  # noqa: E402

for _module in (_tp_parallel, _tp_parallel_map, _tp_concurrency):
    _module.enable_death_signal = _die_with_parent
