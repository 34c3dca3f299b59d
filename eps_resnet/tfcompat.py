"""The one place that imports TensorFlow and tensorpack, quietly and with the fixes this stack needs.

TensorFlow's C++ runtime prints a handful of lines (CUDA probing, oneDNN notice) while it loads,
before any log level applies. We capture file descriptor 2 during the import and replay the capture
only if the import fails, so a broken install still explains itself.
"""
import os
import sys
import tempfile

# Importing this module runs eps_resnet/__init__ first (its parent package): legacy Keras is selected.


def _import_quietly():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow
            import tensorpack  # noqa: F401  (loads TensorFlow's Keras layers: also noisy)
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


tf = _import_quietly()
tfv1 = tf.compat.v1
tf.get_logger().setLevel("ERROR")

# tensorpack's export helper still calls the TF1 graph_util module.
import tensorpack.tfutils.export as _tp_export  # noqa: E402

_tp_export.graph_util = tfv1.graph_util

# tensorpack's HorovodTrainer calls tf.global_variables(), which TensorFlow 2 keeps only under compat.v1.
if not hasattr(tf, "global_variables"):
    tf.global_variables = tfv1.global_variables
