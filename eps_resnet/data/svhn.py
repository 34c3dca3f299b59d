"""SVHN (format 2, cropped digits) from DIR/{train,test,extra}_32x32.mat.

Each file holds X (32 x 32 x 3 x N, uint8) and y (N x 1) where the digit 0 has label 10.
"""
import os

import numpy as np

from .. import UserError

URL = "http://ufldl.stanford.edu/housenumbers/"


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
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3) or X.shape[3] != y.size:
        raise UserError("SVHN file %s has X of shape %s and %d labels; expected 32x32x3xN and N labels"
                        % (path, X.shape, y.size))
    images = np.ascontiguousarray(X.transpose(3, 0, 1, 2)).astype(np.uint8, copy=False)
    labels = y.reshape(-1).astype(np.int32)
    labels[labels == 10] = 0
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError("SVHN file %s has labels outside 1..10" % path)
    return images, labels


def load_svhn(data_dir, split):
    """'train' is train + extra (604,388 images in the official files), 'test' is test."""
    names = ["train", "extra"] if split == "train" else ["test"]
    parts = [load_svhn_file(data_dir, n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
