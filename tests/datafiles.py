"""Writers of small dataset files in the real on-disk formats, for the tests."""
import os
import pickle

import cv2
import numpy as np


def write_cifar10(root, per_batch=20, test=12, seed=0):
    """cifar-10-batches-py with five small data batches, a test batch and the meta file (Python-2 style keys)."""
    rng = np.random.RandomState(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    written = {}
    for name, n in [("data_batch_%d" % i, per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = [int(x) for x in rng.randint(0, 10, size=n)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
        written[name] = (data, labels)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": ["c%d" % i for i in range(10)], "num_vis": 3072}, f, protocol=2)
    return written


def write_cifar100(root, train=30, test=10, seed=1):
    rng = np.random.RandomState(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8),
                         b"fine_labels": [int(x) for x in rng.randint(0, 100, size=n)],
                         b"coarse_labels": [int(x) for x in rng.randint(0, 20, size=n)]}, f, protocol=2)


def write_svhn(root, sizes=(("train", 15), ("test", 7), ("extra", 9)), seed=2):
    import scipy.io
    rng = np.random.RandomState(seed)
    written = {}
    for name, n in sizes:
        X = rng.randint(0, 256, size=(32, 32, 3, n)).astype(np.uint8)
        y = rng.randint(1, 11, size=(n, 1)).astype(np.uint8)  # 10 stands for the digit 0
        scipy.io.savemat(os.path.join(root, "%s_32x32.mat" % name), {"X": X, "y": y})
        written[name] = (X, y)
    return written


def write_imagenet(root, wnids=("n01440764", "n01443537", "n01484850"), per_class=3, val_flat=True, seed=3):
    """train/<wnid>/*.JPEG, val/ (flat + val.txt, or per-class folders) and synsets.txt."""
    rng = np.random.RandomState(seed)

    def jpeg(path, h, w):
        img = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
        cv2.imwrite(path, img)

    for wnid in wnids:
        os.makedirs(os.path.join(root, "train", wnid), exist_ok=True)
        for k in range(per_class):
            jpeg(os.path.join(root, "train", wnid, "%s_%d.JPEG" % (wnid, k)), 40 + 7 * k, 56)
    os.makedirs(os.path.join(root, "val"), exist_ok=True)
    lines = []
    for i, wnid in enumerate(wnids):
        if val_flat:
            name = "ILSVRC2012_val_%08d.JPEG" % (i + 1)
            jpeg(os.path.join(root, "val", name), 50, 60)
            lines.append("%s %d" % (name, i))
        else:
            os.makedirs(os.path.join(root, "val", wnid), exist_ok=True)
            jpeg(os.path.join(root, "val", wnid, "v%d.JPEG" % i), 50, 60)
    if lines:
        with open(os.path.join(root, "val.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "synsets.txt"), "w") as f:
        f.write("\n".join("%s some description" % w for w in wnids) + "\n")
