"""The bundled demo data: scikit-learn's 1,797 handwritten digits (8x8, values 0..16) as 16x16x3 uint8.

Each digit is upscaled to 12x12 and centred in a black 16x16 frame. 16x16 (not CIFAR's 32x32) makes a
training step four times cheaper, so the demo can train a ResNet-32 twice (plain and ε) in a few minutes on a CPU.

Real data that ships with a package from the registry, so `make demo` and the tests need no download.
The split is fixed: a seeded permutation, the first 1,437 images for training and 360 for testing.
"""
import cv2
import numpy as np

NUM_CLASSES = 10
TRAIN_SIZE = 1437
IMAGE_SIZE = 16
MARGIN = 2  # black border around the digit; also the training crops' shift (CIFAR's 4 pixels at 32x32)


def load_digits_split(split):
    from sklearn.datasets import load_digits
    d = load_digits()
    small = (d.images * (255.0 / 16.0)).astype(np.float32)
    # The 8x8 digits touch their borders, and the training crops shift by up to MARGIN pixels; a black margin
    # keeps shifted training images distributed like the test images (cutting strokes at the frame would
    # skew BatchNorm's moving statistics against the test set).
    inner = IMAGE_SIZE - 2 * MARGIN
    digit = np.stack([cv2.resize(im, (inner, inner), interpolation=cv2.INTER_LINEAR) for im in small])
    framed = np.zeros((len(small), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    framed[:, MARGIN:MARGIN + inner, MARGIN:MARGIN + inner] = digit
    images = np.repeat(np.clip(framed + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    labels = d.target.astype(np.int32)
    order = np.random.RandomState(20180618).permutation(len(labels))
    idx = order[:TRAIN_SIZE] if split == "train" else order[TRAIN_SIZE:]
    return np.ascontiguousarray(images[idx]), labels[idx]
