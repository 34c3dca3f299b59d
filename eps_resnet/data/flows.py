"""The dataflows of the data sets: shuffling, augmentation, batching and prefetching processes (tensorpack)."""
import os
from typing import List, Optional, Tuple

import numpy as np

from .. import UserError
from .. import tfcompat  # noqa: F401  (imports TensorFlow/tensorpack quietly, before tensorpack.dataflow)
from tensorpack.dataflow import (AugmentImageComponent, BatchData, DataFromList, MapData, MultiProcessMapDataZMQ,
                                 MultiProcessRunnerZMQ, ProxyDataFlow, RNGDataFlow, imgaug)
from tensorpack.utils import logger
from . import augment, digits
from . import require_data_dir, dataset_info, load_arrays
from .imagenet import imagenet_files, read_rgb
from .watchdog import Guarded


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


def holdout_indices(total: int, count: int) -> np.ndarray:
    """`count` training images spread evenly over the split (files are sorted by class): the ones --epsilon auto
    holds out of training to measure responses on."""
    if not 0 < count < total:
        raise UserError("--holdout %d must be between 1 and the %d training images less one" % (count, total))
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def holdout_arrays(dataset: str, count: int, data_dir: Optional[str] = None, image_size: Optional[int] = None,
                   imagenet_aug: str = "intended") -> Tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the held-out training images, prepared as validation images are."""
    if dataset_info(dataset).in_memory:
        images, labels = load_arrays(dataset, "train", data_dir)
        chosen = holdout_indices(len(labels), count)
        return images[chosen], labels[chosen]
    items = imagenet_files(data_dir, "train")
    augmentor = imgaug.AugmentorList(val_augmentors(dataset, image_size, imagenet_aug))
    images, labels = [], []
    for i in holdout_indices(len(items), count):
        image, problem = read_rgb(items[i][0])
        if image is not None:  # an unreadable file is skipped here as in training
            images.append(augmentor.augment(image))
            labels.append(items[i][1])
    if not images:
        raise UserError("none of the %d held-out training images of %s could be read" % (count, data_dir))
    return np.stack(images), np.asarray(labels, np.int32)


def build_dataflow(dataset: str, split: str, batch_size: int, data_dir: Optional[str] = None, workers: int = 0,
                   image_size: Optional[int] = None, svhn_jitter: str = "paper", imagenet_aug: str = "intended",
                   shuffle=None, arrays=None, holdout: int = 0):
    """A DataFlow of [images uint8 [B,H,W,3], labels int32 [B]] batches.

    split: 'train' (shuffled, augmented, drops the last partial batch) or the validation split
    ('test' for CIFAR/SVHN/digits, 'val' for ImageNet; deterministic, keeps the last partial batch).
    workers: processes that prefetch (0: everything in this process).
    arrays: (images, labels) already loaded, to avoid reading an in-memory dataset twice.
    holdout: training images left out of the 'train' split (holdout_indices; --epsilon auto measures on them).
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
        if training and holdout:
            kept = np.setdiff1d(np.arange(len(labels)), holdout_indices(len(labels), holdout))
            images, labels = images[kept], labels[kept]
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

    require_data_dir(data_dir, dataset)
    items = imagenet_files(data_dir, "train" if training else "val")
    if training and holdout:
        left_out = set(holdout_indices(len(items), holdout).tolist())
        items = [item for i, item in enumerate(items) if i not in left_out]
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
