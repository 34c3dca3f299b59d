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
from .. import tfcompat  # noqa: F401  (imports TensorFlow/tensorpack quietly, before tensorpack.dataflow)
from ..fileio import atomic_write_bytes
from tensorpack.dataflow import (AugmentImageComponent, BatchData, DataFromList, MapData, MultiProcessMapDataZMQ,
                                 MultiProcessRunnerZMQ, ProxyDataFlow, RNGDataFlow, imgaug)
from tensorpack.utils import logger
from . import augment
from .checks import checked_split
from .cifar import cifar_files, load_cifar
from . import digits
from .digits import load_digits_split
from .imagenet import imagenet_files, imagenet_synsets, read_rgb
from .svhn import load_svhn, svhn_files
from .watchdog import Guarded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    val_split: str
    in_memory: bool


DATASETS = {
    "cifar10": DatasetInfo("cifar10", 10, 32, "test", True),
    "cifar100": DatasetInfo("cifar100", 100, 32, "test", True),
    "svhn": DatasetInfo("svhn", 10, 32, "test", True),
    "digits": DatasetInfo("digits", 10, digits.IMAGE_SIZE, "test", True),
    "imagenet": DatasetInfo("imagenet", 1000, 224, "val", False),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError("unknown dataset %r; choose one of %s" % (name, ", ".join(DATASETS)))
    return DATASETS[name]


def _require_dir(data_dir, dataset):
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
    _require_dir(data_dir, dataset)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(data_dir, dataset_info(dataset).num_classes, split)
    if dataset == "svhn":
        return load_svhn(data_dir, split)
    raise UserError("%s is not an in-memory dataset" % dataset)


MEAN_FROM = ("train", "all")


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
                logger.info("mean image read from %s (its source files are unchanged)" % cache)
                return mean.astype(np.float32)
            logger.info("the mean image cached in %s was computed from other files; computing it again" % cache)
        except (OSError, ValueError, KeyError, EOFError):
            logger.info("the mean image cached in %s cannot be read; computing it again" % cache)
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
            logger.info("mean image computed from the %s split(s) and cached in %s" % (" + ".join(splits), cache))
        except OSError as e:
            log.warning("could not cache the mean image at %s (%s); it will be recomputed next time", cache, e)
    return mean


def train_augmentors(dataset: str, image_size: Optional[int] = None, svhn_jitter: str = "paper",
                     imagenet_aug: str = "intended") -> list:
    if dataset in ("cifar10", "cifar100"):
        return augment.cifar_train_augmentors(flip=True)
    if dataset == "digits":
        # digits are not mirror-symmetric
        return augment.cifar_train_augmentors(flip=False, size=digits.IMAGE_SIZE, pad=digits.MARGIN)
    if dataset == "svhn":
        return augment.svhn_train_augmentors(svhn_jitter)
    return augment.imagenet_train_augmentors(image_size or 224, imagenet_aug)


def val_augmentors(dataset: str, image_size: Optional[int] = None, imagenet_aug: str = "intended") -> list:
    if dataset == "imagenet":
        return augment.imagenet_val_augmentors(image_size or 224, imagenet_aug)
    return []


class ArrayImages(RNGDataFlow):
    """A DataFlow over in-memory arrays yielding [image, label], optionally shuffled each epoch."""

    def __init__(self, images, labels, shuffle):
        self.images, self.labels, self.shuffle = images, labels, shuffle

    def __len__(self):
        return len(self.labels)

    def __iter__(self):
        n = len(self.labels)
        for i in (self.rng.permutation(n) if self.shuffle else range(n)):
            yield [self.images[i], self.labels[i]]


def _decode_file(item):
    """[image, label], or [None, "path: why"] for a file that cannot be decoded (SkipUnreadable drops and counts
    it)."""
    path, label = item
    img, problem = read_rgb(path)
    if img is None:
        return [None, "%s %s" % (path, problem)]
    return [img, np.int32(label)]


class SkipUnreadable(ProxyDataFlow):
    """Drops the images a decoder could not read, and says so in the log with a running count. When most images
    fail (more than half of at least MOSTLY_BROKEN_AFTER read), the data set itself is broken: an error."""

    MOSTLY_BROKEN_AFTER = 200

    def __init__(self, ds, what):
        super().__init__(ds)
        self.what = what
        self.skipped = 0
        self.seen = 0

    def __iter__(self):
        for dp in self.ds:
            self.seen += 1
            if dp[0] is None:
                self.skipped += 1
                if self.skipped <= 10 or self.skipped % 100 == 0:
                    logger.warn("skipped unreadable image %s (%d %s image(s) skipped so far)"
                                % (dp[1], self.skipped, self.what))
                if self.seen >= self.MOSTLY_BROKEN_AFTER and 2 * self.skipped > self.seen:
                    raise UserError("%d of the first %d %s images could not be decoded (e.g. %s); check that the "
                                    "files are intact images" % (self.skipped, self.seen, self.what, dp[1]))
                continue
            yield dp


def check_some_images_decode(items: List[Tuple[str, int]], folder: str, samples: int = 16):
    """Decode a few images spread over the list: a folder of files that are all unreadable would otherwise make
    the training dataflow wait for an image forever."""
    picks = [items[i * len(items) // min(samples, len(items))] for i in range(min(samples, len(items)))]
    problems = [problem for _, problem in (read_rgb(path) for path, _ in picks)]
    if all(problems):
        raise UserError("none of %d images sampled from %s could be decoded (e.g. %s %s); check that the files are "
                        "intact JPEG images" % (len(picks), folder, picks[0][0], problems[0]))


def build_dataflow(dataset: str, split: str, batch_size: int, data_dir: Optional[str] = None, workers: int = 0,
                   image_size: Optional[int] = None, svhn_jitter: str = "paper", imagenet_aug: str = "intended",
                   shuffle=None, arrays=None):
    """A DataFlow of [images uint8 [B,H,W,3], labels int32 [B]] batches.

    split: 'train' (shuffled, augmented, drops the last partial batch) or the validation split
    ('test' for CIFAR/SVHN/digits, 'val' for ImageNet; deterministic, keeps the last partial batch).
    workers: processes that prefetch (0: everything in this process).
    arrays: (images, labels) already loaded, to avoid reading an in-memory dataset twice.
    """
    info = dataset_info(dataset)
    training = split == "train"
    if not training and split != info.val_split:
        raise UserError("%s has splits 'train' and %r, got %r" % (dataset, info.val_split, split))
    if batch_size < 1:
        raise UserError("batch size must be >= 1, got %r" % (batch_size,))
    shuffle = training if shuffle is None else shuffle
    augs = (train_augmentors(dataset, image_size, svhn_jitter, imagenet_aug) if training
            else val_augmentors(dataset, image_size, imagenet_aug))

    if info.in_memory:
        images, labels = arrays if arrays is not None else load_arrays(dataset, split, data_dir)
        if training and len(labels) < batch_size:
            raise UserError("--batch %d is larger than the %d training images of %s; use --batch %d or less"
                            % (batch_size, len(labels), dataset, len(labels)))
        ds = ArrayImages(images, labels, shuffle)
        if augs:
            ds = AugmentImageComponent(ds, augs)
        ds = BatchData(ds, batch_size, remainder=not training)
        if workers > 0 and training:
            ds = MultiProcessRunnerZMQ(Guarded(ds, split), workers)
        return Guarded(ds, split)

    _require_dir(data_dir, dataset)
    items = imagenet_files(data_dir, "train" if training else "val")
    if training and len(items) < batch_size:
        raise UserError("--batch %d is larger than the %d training images in %s; use --batch %d or less"
                        % (batch_size, len(items), data_dir, len(items)))
    check_some_images_decode(items, os.path.join(data_dir, split))
    ds = DataFromList(items, shuffle=shuffle)
    augmentor = imgaug.AugmentorList(augs)

    def load_and_augment(item):
        dp = _decode_file(item)
        if dp[0] is not None:
            try:
                dp[0] = augmentor.augment(dp[0])
            except Exception as e:  # one odd image (a 1-pixel strip, ...) is skipped and counted, not fatal
                return [None, "%s could not be augmented (%s: %s)" % (item[0], type(e).__name__, e)]
        return dp

    if workers > 0:
        ds = MultiProcessMapDataZMQ(ds, workers, load_and_augment, buffer_size=min(200 * workers, 2000),
                                    strict=not training)
    else:
        ds = MapData(ds, load_and_augment)
    return Guarded(BatchData(SkipUnreadable(ds, split), batch_size, remainder=not training), split)


__all__ = ["DATASETS", "MEAN_FROM", "DatasetInfo", "build_dataflow", "dataset_info", "imagenet_files", "imagenet_synsets",
           "load_arrays", "per_pixel_mean", "train_augmentors", "val_augmentors"]
