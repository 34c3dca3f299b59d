"""ε-ResNet: deep residual networks that learn strict identity mappings (Yu, Yu, Ramalingam, CVPR 2018).

Importing this package first is required: tensorpack's layers only exist on legacy (tf-)Keras, and
TensorFlow picks its Keras flavour when it is first imported. We also quiet TensorFlow's C++ logging
unless the user asked for something else.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as _np  # noqa: E402

# tensorpack 0.11 still uses aliases that numpy 2 removed (image.py, serialize.py, viz.py).
for _alias, _value in (("float", _np.floating), ("object", object)):
    if _alias not in vars(_np):  # hasattr() would trigger numpy's FutureWarning
        setattr(_np, _alias, _value)

__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user can fix (bad flag, missing data, wrong checkpoint).

    Entry scripts print its message as one line and exit with code 2, without a traceback. A `quiet` error
    exits the same way without printing: in a multi-process run, rank 0 alone prints the shared message.
    """

    def __init__(self, message, quiet=False):
        super().__init__(message)
        self.quiet = quiet
