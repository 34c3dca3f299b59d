"""SVHN (format 2, cropped digits) from DIR/{train,test,extra}_32x32.mat.

Each file holds X (32 x 32 x 3 x N, uint8) and y (N x 1) where the digit 0 has label 10.
"""
import os

import numpy as np

from .. import UserError
from .checks import checked_split

URL = "http://ufldl.stanford.edu/housenumbers/"


def svhn_files(data_dir, split):
    """The .mat files of 'train' (train + extra) or 'test'."""
    return [os.path.join(data_dir, "%s_32x32.mat" % n) for n in (["train", "extra"] if split == "train" else ["test"])]


def load_svhn_file(data_dir, name):
    """(images uint8 [N,32,32,3], labels int32 [N] in 0..9) of one of 'train', 'test', 'extra'."""
    import scipy.io
    path = os.path.join(data_dir, "%s_32x32.mat" % name)
    if not os.path.isfile(path):
        raise UserError("SVHN file %s not found; download %s%s_32x32.mat into %s" % (path, URL, name, data_dir))
    try:
        mat = scipy.io.loadmat(path)
        X, y = mat["X"], mat["y"]
    except Exception as e:  # scipy raises many types for damaged files
        raise UserError("cannot read SVHN file %s (%s: %s); expected the official %s_32x32.mat, download it again"
                        % (path, type(e).__name__, e, name))
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        raise UserError("SVHN file %s has X of shape %s; expected 32x32x3xN" % (path, "x".join(map(str, X.shape))))
    # labels 1..10 in the file (10 is the digit 0): checked against 11 classes, then 1..10 required
    images, labels = checked_split(X.transpose(3, 0, 1, 2), np.asarray(y).reshape(-1), 11, 32,
                                   "SVHN file %s" % path, name)
    if labels.min() < 1:
        raise UserError("SVHN file %s has labels outside 1..10; is this the official %s_32x32.mat?" % (path, name))
    labels[labels == 10] = 0
    return images, labels


def load_svhn(data_dir, split):
    """'train' is train + extra (604,388 images in the official files), 'test' is test."""
    names = ["train", "extra"] if split == "train" else ["test"]
    parts = [load_svhn_file(data_dir, n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
