"""What every reader's output must be before training sees it: one check for in-memory splits, one for image files.

In-memory splits (CIFAR, SVHN, the digits): at least one image, images [N, S, S, 3] of integers 0..255 (float
pixels are refused: casting 300.0, -5.0 or NaN to uint8 would silently give other images), labels [N] of integers
in 0..classes-1. Image files (ImageNet): the size the header declares is bounded before anything is decoded, and
a file that cannot be decoded is reported with the reason, never raised (the dataflow skips and counts it).
"""
import struct
from typing import Optional, Tuple

import numpy as np

from .. import UserError

MAX_IMAGE_SIDE = 30000             # pixels; the largest ImageNet photo is a few thousand across
MAX_IMAGE_PIXELS = 100 * 1000 * 1000


def checked_split(images, labels, num_classes: int, image_size: int, where: str, split: str):
    """(images uint8 [N,S,S,3], labels int32 [N]) after the checks above; `where` names the files in messages."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise UserError("%s: the %s images have shape %s, expected N x %d x %d x 3; the files are not in the "
                        "dataset's format" % (where, split, "x".join(map(str, images.shape)), image_size, image_size))
    if len(images) == 0:
        raise UserError("%s: the %s split holds no images; replace the files with the complete dataset"
                        % (where, split))
    if images.dtype.kind not in "ui":
        raise UserError("%s: the %s pixels are %s, expected integers 0..255 (uint8); convert the files to the "
                        "dataset's format" % (where, split, images.dtype))
    if images.dtype != np.uint8 and (images.min() < 0 or images.max() > 255):
        raise UserError("%s: %s pixels range over %d..%d, outside 0..255; the files are damaged or not in the "
                        "dataset's format" % (where, split, images.min(), images.max()))
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError("%s: %d %s images but %d labels; the files are damaged, replace them"
                        % (where, len(images), split, labels.size))
    if labels.dtype.kind not in "ui" and not (labels.dtype.kind == "f" and np.all(np.isfinite(labels))
                                               and np.all(labels == np.round(labels))):
        raise UserError("%s: the %s labels are not whole numbers (%s); the files are damaged, replace them"
                        % (where, split, labels.dtype))
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError("%s: %s labels range over %d..%d, outside the %d classes 0..%d; is this the right dataset?"
                        % (where, split, labels.min(), labels.max(), num_classes, num_classes - 1))
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int32)


def image_dimensions(head: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) declared by a JPEG or PNG header (the first bytes of the file), or None if not found."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if not head.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = struct.unpack(">H", head[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame: the image size
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def size_problem(path: str) -> Optional[str]:
    """Why the image file at `path` must not be decoded (an absurd declared size, or unreadable), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as e:
        return "cannot be read (%s)" % e.strerror
    size = image_dimensions(head)
    if size is None:
        return None
    width, height = size
    if width < 1 or height < 1 or max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        return "declares %dx%d pixels (at most %d per side and %d M in all are decoded)" % (
            width, height, MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS // 1000000)
    return None
