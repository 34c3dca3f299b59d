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


def _read_batch(path, label_key):
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int32)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise UserError("cannot read CIFAR batch %s (%s: %s); expected an official python-pickle batch file, "
                        "re-extract the dataset archive" % (path, type(e).__name__, e))
    if len(images) != len(labels):
        raise UserError("CIFAR batch %s has %d images but %d labels; the file is damaged, re-extract it"
                        % (path, len(images), len(labels)))
    return np.ascontiguousarray(images), labels


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
    parts = [_read_batch(f, key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError("CIFAR-%d labels in %s fall outside 0..%d; is this the right dataset?"
                        % (num_classes, folder, num_classes - 1))
    return images, labels
