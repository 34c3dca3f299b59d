"""Datasets and dataflows: the only code that touches dataset files.

`build_dataflow(dataset, split, batch_size, ...)` gives a tensorpack DataFlow of [image, label] batches:
uint8 RGB images [B, H, W, 3] and int32 labels [B]. Training flows shuffle, augment and prefetch in worker
processes; validation flows are deterministic and keep the last partial batch.
"""
import json
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .. import UserError
from ..fileio import atomic_write_bytes
from .checks import checked_split
from .cifar import cifar_files, load_cifar
from . import digits
from .digits import load_digits_split
from .imagenet import imagenet_files, imagenet_synsets
from .svhn import load_svhn, svhn_files

log = logging.getLogger(__name__)

# The dataflows need TensorFlow and tensorpack; they load on first use, so that what only reads the data sets'
# facts (a --dry-run, a flag check) starts in a fraction of a second.
_FLOWS = ("ArrayImages", "SkipUnreadable", "build_dataflow", "check_some_images_decode", "train_augmentors",
          "val_augmentors", "holdout_arrays", "holdout_indices")


def __getattr__(name):
    if name in _FLOWS:
        from . import flows
        return getattr(flows, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


@dataclass(frozen=True)
class DatasetInfo:
    """Every fact of a data set that code outside this package needs (no `dataset ==` branch elsewhere)."""
    name: str
    num_classes: int              # the default; ImageNet's may come from the data's synsets.txt
    image_size: int
    val_split: str
    in_memory: bool               # small arrays (augmented in memory) or JPEG files (decoded by many workers)
    style: str                    # the network family: "cifar" (6n+2 layers, -n) or "imagenet" (-d depth)
    max_workers: int              # default dataflow processes at most: JPEG decoding needs many, arrays few
    needs_data_dir: bool          # False: the data ship with a package
    train_command: str            # the script (and flag) that trains on it
    top5: bool = False            # top-5 error reported beside top-1


DATASETS = {
    "cifar10": DatasetInfo("cifar10", 10, 32, "test", True, "cifar", 4, True, "train_cifar.py"),
    "cifar100": DatasetInfo("cifar100", 100, 32, "test", True, "cifar", 4, True, "train_cifar.py --cifar100"),
    "svhn": DatasetInfo("svhn", 10, 32, "test", True, "cifar", 4, True, "train_svhn.py"),
    "digits": DatasetInfo("digits", 10, digits.IMAGE_SIZE, "test", True, "cifar", 4, False,
                          "train_cifar.py --demo"),
    # 40 processes as tensorpack's ImageNet example
    "imagenet": DatasetInfo("imagenet", 1000, 224, "val", False, "imagenet", 40, True, "train_imagenet.py",
                            top5=True),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError("unknown dataset %r; choose one of %s" % (name, ", ".join(DATASETS)))
    return DATASETS[name]


def num_classes_in(dataset: str, data_dir: Optional[str] = None) -> int:
    """The classes a network trained on `dataset` in `data_dir` predicts: ImageNet's from its synsets (a subset
    of the 1000 is allowed), every other data set's fixed count."""
    if dataset == "imagenet" and data_dir and os.path.isdir(data_dir):
        return len(imagenet_synsets(data_dir))
    return dataset_info(dataset).num_classes


def require_data_dir(data_dir, dataset):
    if data_dir is None or not os.path.isdir(data_dir):
        raise UserError("data directory %r for %s does not exist; pass --data DIR pointing at the dataset"
                        % (data_dir, dataset))


def load_arrays(dataset: str, split: str, data_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,S,S,3], labels int32 [N]) of an in-memory dataset (S: 32, the digits 16); split 'train'
    or 'test'."""
    if split not in ("train", "test"):
        raise UserError("split must be 'train' or 'test' for %s, got %r" % (dataset, split))
    if dataset == "digits":
        images, labels = load_digits_split(split)
        return checked_split(images, labels, digits.NUM_CLASSES, digits.IMAGE_SIZE, "the bundled digits", split)
    require_data_dir(data_dir, dataset)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(data_dir, dataset_info(dataset).num_classes, split)
    if dataset == "svhn":
        return load_svhn(data_dir, split)
    raise UserError("%s is not an in-memory dataset" % dataset)


# The choices of the data flags, spelled here only (a dry run reads them without loading TensorFlow)
MEAN_FROM = ("train", "all")                  # --mean-from: the training split, or every split (released)
SVHN_JITTERS = ("paper", "released", "none")  # --jitter (augment.svhn_train_augmentors)
IMAGENET_AUGS = ("intended", "released")      # --aug (augment.imagenet_train_augmentors)


def mean_image_of(arrays) -> np.ndarray:
    """The per-pixel mean (float32 [S,S,3]) of several uint8 image arrays together, summed in slices: SVHN's
    630,000 images would take 15 GB as one float64 array."""
    total, count = 0.0, 0
    for images in arrays:
        for i in range(0, len(images), 10000):
            total = total + images[i:i + 10000].sum(axis=0, dtype=np.float64)
        count += len(images)
    return (total / count).astype(np.float32)


def split_files(dataset: str, data_dir: str, split: str) -> List[str]:
    """The files an in-memory split is read from (none for the bundled digits)."""
    if dataset in ("cifar10", "cifar100"):
        return cifar_files(data_dir, dataset_info(dataset).num_classes, split)[1]
    if dataset == "svhn":
        return svhn_files(data_dir, split)
    return []


def source_key(files: List[str]) -> str:
    """What a cache was computed from: each file's name, size and modification time."""
    stats = []
    for path in files:
        try:
            st = os.stat(path)
            stats.append([os.path.basename(path), st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([os.path.basename(path), None, None])
    return json.dumps(stats)


def per_pixel_mean(dataset: str, data_dir: Optional[str] = None, images: Optional[np.ndarray] = None,
                   write_cache: bool = True, mean_from: str = "train") -> np.ndarray:
    """Mean image (float32 [S,S,3]), cached as DIR/eps_resnet_mean_<dataset>.npz (`_all` with mean_from 'all').

    mean_from 'train': the training split (CIFAR train; SVHN train + extra). 'all': every split, as the released
    code's tensorpack 0.2 data sets (CIFAR train + test; SVHN train + extra + test).
    CIFAR/SVHN: the per-pixel mean. Digits demo: the per-channel mean (see below).
    `images`: the training split, already loaded.

    The cache holds the name, size and modification time of every file it was computed from, and is used only
    while they are unchanged (the log says which). It is written atomically; a read-only data directory just
    means it is recomputed each time. `write_cache=False` only reads it (Horovod ranks other than 0 write nothing).
    """
    if dataset == "imagenet":
        raise UserError("ImageNet uses a fixed channel mean/std, not a per-pixel mean")
    if mean_from not in MEAN_FROM:
        raise UserError("--mean-from must be one of %s, got %r" % (", ".join(MEAN_FROM), mean_from))
    splits = ["train"] + (["test"] if mean_from == "all" else [])
    name = "eps_resnet_mean_%s%s.npz" % (dataset, "_all" if mean_from == "all" else "")
    cache = os.path.join(data_dir, name) if data_dir and dataset != "digits" else None
    key = source_key([f for s in splits for f in split_files(dataset, data_dir, s)]) if cache else None
    if cache and os.path.isfile(cache):
        try:
            with np.load(cache) as saved:
                mean, saved_key = saved["mean"], str(saved["source"])
            if mean.shape == (32, 32, 3) and saved_key == key:
                _info("mean image read from %s (its source files are unchanged)" % cache)
                return mean.astype(np.float32)
            _info("the mean image cached in %s was computed from other files; computing it again" % cache)
        except (OSError, ValueError, KeyError, EOFError):
            _info("the mean image cached in %s cannot be read; computing it again" % cache)
    if images is None:
        images, _ = load_arrays(dataset, "train", data_dir)
    mean = mean_image_of([images] + [load_arrays(dataset, s, data_dir)[0] for s in splits[1:]])
    if dataset == "digits":
        # Centred strokes make the per-pixel mean a sharp blob that shifted training crops do not line up
        # with; BatchNorm's moving statistics then learn a larger spread than clean test images have.
        # A per-channel mean (flat image) keeps the demo's train and test inputs alike.
        mean = np.broadcast_to(mean.mean(axis=(0, 1)), mean.shape).astype(np.float32)
    if cache and write_cache:
        import io
        buf = io.BytesIO()
        np.savez(buf, mean=mean, source=np.array(key))
        try:
            atomic_write_bytes(cache, buf.getvalue())
            _info("mean image computed from the %s split(s) and cached in %s" % (" + ".join(splits), cache))
        except OSError as e:
            log.warning("could not cache the mean image at %s (%s); it will be recomputed next time", cache, e)
    return mean


def _info(message):
    from tensorpack.utils import logger  # loaded by then: only training reads the mean image
    logger.info(message)


__all__ = ["DATASETS", "IMAGENET_AUGS", "MEAN_FROM", "SVHN_JITTERS", "DatasetInfo", "dataset_info", "imagenet_files", "imagenet_synsets", "num_classes_in",
           "load_arrays", "per_pixel_mean", "require_data_dir", "split_files", "source_key"] + list(_FLOWS)
