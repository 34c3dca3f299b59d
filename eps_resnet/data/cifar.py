"""CIFAR-10 / CIFAR-100 from the official python-pickle layout.

    DIR/cifar-10-batches-py/{data_batch_1..5, test_batch}   keys b'data' (N x 3072 uint8), b'labels'
    DIR/cifar-100-python/{train, test}                      keys b'data', b'fine_labels'

The files were written by Python 2, so they are read with encoding='bytes'. The row count is taken
from each file (tensorpack's reader assumes the official sizes), so tests can write small files.
"""
import os
import pickle

import numpy as np

from .. import UserError
from .checks import checked_split

URLS = {10: "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        100: "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def cifar_files(data_dir, num_classes, split):
    if num_classes == 10:
        folder = os.path.join(data_dir, "cifar-10-batches-py")
        names = ["data_batch_%d" % i for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        folder = os.path.join(data_dir, "cifar-100-python")
        names = ["train"] if split == "train" else ["test"]
    return folder, [os.path.join(folder, n) for n in names]


def _read_batch(path, label_key, num_classes, split):
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(d[b"data"]), np.asarray(d[label_key])
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError, AttributeError,
            IndexError, MemoryError) as e:
        raise UserError("cannot read CIFAR batch %s (%s: %s); expected an official python-pickle batch file, "
                        "re-extract the dataset archive" % (path, type(e).__name__, e))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError("CIFAR batch %s holds data of shape %s, expected N x 3072 (32x32 RGB rows); re-extract the "
                        "dataset archive" % (path, "x".join(map(str, data.shape))))
    return checked_split(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels, num_classes, 32,
                         "CIFAR batch %s" % path, split)


def load_cifar(data_dir, num_classes, split):
    """(images uint8 [N,32,32,3] RGB, labels int32 [N]) of the 'train' or 'test' split."""
    if num_classes not in (10, 100):
        raise UserError("CIFAR has 10 or 100 classes, got %r" % (num_classes,))
    folder, files = cifar_files(data_dir, num_classes, split)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UserError("CIFAR-%d not found: %s is missing; download %s and extract it into %s"
                        % (num_classes, missing[0], URLS[num_classes], data_dir))
    key = b"labels" if num_classes == 10 else b"fine_labels"
    parts = [_read_batch(f, key, num_classes, split) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
