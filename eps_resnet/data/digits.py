"""The bundled demo data: scikit-learn's 1,797 handwritten digits (8x8, values 0..16) as 32x32x3 uint8.

Real data that ships with a package from the registry, so `make demo` and the tests need no download.
The split is fixed: a seeded permutation, the first 1,437 images for training and 360 for testing.
"""
import cv2
import numpy as np

NUM_CLASSES = 10
TRAIN_SIZE = 1437


def load_digits_split(split):
    from sklearn.datasets import load_digits
    d = load_digits()
    small = (d.images * (255.0 / 16.0)).astype(np.float32)
    big = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_LINEAR) for im in small])
    images = np.repeat(np.clip(big + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    labels = d.target.astype(np.int32)
    order = np.random.RandomState(20180618).permutation(len(labels))
    idx = order[:TRAIN_SIZE] if split == "train" else order[TRAIN_SIZE:]
    return np.ascontiguousarray(images[idx]), labels[idx]
