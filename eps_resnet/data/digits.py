"""The bundled demo data: scikit-learn's 1,797 handwritten digits (8x8, values 0..16) as 32x32x3 uint8.

Each digit is upscaled to 24x24 and centred in a black 32x32 frame.

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
    # 24x24 digit in a black 32x32 frame: the 8x8 digits touch their borders, and the training crops
    # shift by up to 4 pixels; a margin keeps shifted training images distributed like the test images
    # (cutting strokes at the frame would skew BatchNorm's moving statistics against the test set).
    digit = np.stack([cv2.resize(im, (24, 24), interpolation=cv2.INTER_LINEAR) for im in small])
    framed = np.zeros((len(small), 32, 32), np.float32)
    framed[:, 4:28, 4:28] = digit
    images = np.repeat(np.clip(framed + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    labels = d.target.astype(np.int32)
    order = np.random.RandomState(20180618).permutation(len(labels))
    idx = order[:TRAIN_SIZE] if split == "train" else order[TRAIN_SIZE:]
    return np.ascontiguousarray(images[idx]), labels[idx]
