"""Augmentation of the paper (Sec. 4, each data set), as tensorpack ImageAugmentors (each usable on its own).

All augmentors take and return RGB uint8 images of shape [H, W, 3]; the per-pixel mean (CIFAR, SVHN)
and the ImageNet normalisation happen inside the graph.
"""
import cv2
import numpy as np
from tensorpack.dataflow import imgaug
from tensorpack.dataflow.imgaug.base import ImageAugmentor, PhotometricAugmentor
from tensorpack.dataflow.imgaug.deform import GaussianDeform
from tensorpack.dataflow.imgaug.transform import CropTransform, ResizeTransform, TransformList

from . import IMAGENET_AUGS, SVHN_JITTERS

# AlexNet PCA lighting, RGB order: eigenvalues for pixel values in [0, 1], and scaled for [0, 255]
PCA_EIGVAL_UNIT = np.asarray([0.2175, 0.0188, 0.0045])
PCA_EIGVAL = PCA_EIGVAL_UNIT.astype(np.float32) * 255.0
PCA_EIGVEC = np.asarray([[-0.5675, 0.7192, 0.4009],
                         [-0.5808, -0.0045, -0.8140],
                         [-0.5836, -0.6948, 0.4203]], np.float32)
GREY_WEIGHTS = np.asarray([0.299, 0.587, 0.114], np.float32)  # RGB -> luma, as cv2's RGB2GRAY


def cifar_train_augmentors(flip=True, size=32, pad=4):
    """Pad to 40x40 (image pasted in the centre of zeros), random 32x32 crop, random horizontal flip
    (`size` + 2 `pad`, then `size`)."""
    augs = [imgaug.CenterPaste((size + 2 * pad, size + 2 * pad)), imgaug.RandomCrop((size, size))]
    if flip:
        augs.append(imgaug.Flip(horiz=True))
    return augs


class PaperColorJitter(PhotometricAugmentor):
    """SVHN colour jitter as the paper describes it.

    Add one random offset b in [-brightness, brightness] to every pixel of the image; then, for each pixel,
    scale the residual of its R, G, B values around their mean (the pixel's grey level) by a random factor
    s in [low, high] drawn for that pixel; clip to [0, 255]. Per pixel: x'_c = m + b + s (x_c - m).
    """

    def __init__(self, brightness=10.0, scale=(0.8, 1.2)):
        super().__init__()
        self._init(locals())

    def _get_augment_params(self, img):
        h, w = img.shape[:2]
        return (self._rand_range(-self.brightness, self.brightness),
                self.rng.uniform(self.scale[0], self.scale[1], size=(h, w, 1)).astype(np.float32))

    def _augment(self, img, params):
        offset, scale = params
        x = img.astype(np.float32)
        mean = x.mean(axis=2, keepdims=True)
        out = mean + offset + scale * (x - mean)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)  # +0.5: round to nearest


class ReleasedSvhnAugment(PhotometricAugmentor):
    """The released code's SVHN training chain (svhnEpsilonResnet.py, on tensorpack 0.2), from the 32x32 image
    to the 32x32 crop: paste into a 40x40 float canvas of zeros; add one brightness offset in [-10, 10] and clip
    to [0, 255]; scale each channel around its own mean by a contrast factor in [0.8, 1.2] and clip; deform
    the 40x40 image with tensorpack's GaussianDeform (four anchors, sigma 0.2, offsets up to 3 pixels);
    crop 32x32 at an offset in 0..7.

    Everything stays float as in the released code; only the end is rounded to uint8, because our input
    pipeline carries uint8 (at most half a grey level away from the released float image).
    """

    def __init__(self, size=32, canvas=40, brightness=10.0, contrast=(0.8, 1.2)):
        super().__init__()
        self._init(locals())
        self.deform = GaussianDeform([(0.2, 0.2), (0.2, 0.8), (0.8, 0.8), (0.8, 0.2)], (canvas, canvas), 0.2, 3)

    def _get_augment_params(self, img):
        # as GaussianDeform: K x 2 anchor offsets uniform in [-randrange, randrange)
        shifts = (self.rng.rand(self.deform.K, 2).astype(np.float32) - 0.5) * 2 * self.deform.randrange
        room = self.canvas - self.size
        return (self._rand_range(-self.brightness, self.brightness), self._rand_range(*self.contrast), shifts,
                self.rng.randint(room), self.rng.randint(room))

    def _augment(self, img, params):
        brightness, contrast, shifts, y0, x0 = params
        pad = (self.canvas - img.shape[0]) // 2
        x = np.zeros((self.canvas, self.canvas, img.shape[2]))  # float64, as tensorpack 0.2's CenterPaste
        x[pad:pad + img.shape[0], pad:pad + img.shape[1]] = img
        x = np.clip(x.astype(np.float32) + brightness, 0, 255).astype(np.float64)
        y = x.astype(np.float32)
        mean = y.mean(axis=(0, 1), keepdims=True)
        x = np.clip((y - mean) * contrast + mean, 0, 255).astype(np.float64)
        x = self.deform._augment(x, shifts)
        x = x[y0:y0 + self.size, x0:x0 + self.size]
        return np.floor(x + 0.5).astype(np.uint8)


def svhn_train_augmentors(jitter="paper"):
    """Without the flip (digits are not mirror-symmetric).

    paper: 40x40 paste, the paper's colour jitter on the pasted image, then the 32x32 crop (the paper's order);
    released: the released code's chain (ReleasedSvhnAugment); none: CIFAR's pad-and-crop only.
    """
    if jitter == "paper":
        return [imgaug.CenterPaste((40, 40)), PaperColorJitter(), imgaug.RandomCrop((32, 32))]
    if jitter == "released":
        return [ReleasedSvhnAugment()]
    if jitter == "none":
        return cifar_train_augmentors(flip=False)
    raise ValueError("SVHN jitter must be one of %s, got %r" % (", ".join(SVHN_JITTERS), jitter))


class RandomAreaCrop(ImageAugmentor):
    """Random crop of `area` (fraction of the image) with aspect ratio in `aspect`, resized to size x size.

    Ten tries to find a crop that fits; otherwise the whole image is resized (paper Sec. 4, following its ref. [43]).
    """

    def __init__(self, size=224, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3), interp=cv2.INTER_CUBIC):
        super().__init__()
        self._init(locals())

    def get_transform(self, img):
        h, w = img.shape[:2]
        for _ in range(10):
            target = self.rng.uniform(*self.area) * h * w
            # log-uniform aspect keeps 3/4 and 4/3 equally likely
            ratio = np.exp(self.rng.uniform(np.log(self.aspect[0]), np.log(self.aspect[1])))
            cw = int(round(np.sqrt(target * ratio)))
            ch = int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0 = self.rng.randint(0, w - cw + 1)
                y0 = self.rng.randint(0, h - ch + 1)
                return TransformList([CropTransform(y0, x0, ch, cw),
                                      ResizeTransform(ch, cw, self.size, self.size, self.interp)])
        return ResizeTransform(h, w, self.size, self.size, self.interp)


class PhotometricJitter(PhotometricAugmentor):
    """Brightness, contrast, saturation and PCA lighting in a random order, then clip to [0, 255].

    The same four operations and ranges as tensorpack's Brightness / Contrast(rgb) / Saturation(rgb) /
    Lighting chain, done in one float32 buffer in place, converted back to uint8 once.
    """

    def __init__(self, brightness=30.0, contrast=(0.8, 1.2), saturation=0.4, lighting_std=0.1,
                 eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC):
        super().__init__()
        self._init(locals())

    def _get_augment_params(self, _):
        return (self.rng.permutation(4),
                self._rand_range(-self.brightness, self.brightness),
                self._rand_range(*self.contrast),
                1 + self._rand_range(-self.saturation, self.saturation),
                (self.rng.randn(3) * self.lighting_std).astype(np.float32))

    def _augment(self, img, params):
        order, delta, contrast, saturation, alpha = params
        x = img.astype(np.float32)
        for op in order:
            if op == 0:
                x += delta
            elif op == 1:  # x = (x - m) r + m with m the mean grey level
                m = float(np.dot(x.reshape(-1, 3).mean(axis=0), GREY_WEIGHTS))
                x *= contrast
                x += m * (1 - contrast)
            elif op == 2:  # blend with the per-pixel grey image
                grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
                x *= saturation
                x += (grey * (1 - saturation))[:, :, None]
            else:
                x += self.eigvec.dot(alpha * self.eigval)
        np.clip(x, 0, 255, out=x)
        return x.astype(np.uint8)


class ReleasedAreaCrop(ImageAugmentor):
    """The released ImageNet crop (imagenetEpsilonResnet.py, `Resize`): area 8-100%, aspect ratio uniform in
    [0.75, 1.333] and swapped with probability 1/2, sides truncated to integers, offsets drawn from [0, w - cw)
    (the last position never taken), cubic resize; after ten misses the whole image is resized."""

    def __init__(self, size=224):
        super().__init__()
        self._init(locals())

    def get_transform(self, img):
        h, w = img.shape[:2]
        for _ in range(10):
            target = self.rng.uniform(0.08, 1.0) * h * w
            ratio = self.rng.uniform(0.75, 1.333)
            cw, ch = int(np.sqrt(target * ratio)), int(np.sqrt(target / ratio))
            if self.rng.uniform() < 0.5:
                cw, ch = ch, cw
            if ch <= h and cw <= w:
                x0 = 0 if w == cw else self.rng.randint(0, w - cw)
                y0 = 0 if h == ch else self.rng.randint(0, h - ch)
                return TransformList([CropTransform(y0, x0, ch, cw),
                                      ResizeTransform(ch, cw, self.size, self.size, cv2.INTER_CUBIC)])
        return ResizeTransform(h, w, self.size, self.size, cv2.INTER_CUBIC)


class ReleasedColourJitter(PhotometricAugmentor):
    """The released ImageNet colour chain: tensorpack 0.2's Brightness(30), Contrast(0.8-1.2), Saturation(0.4) and
    Lighting(0.1) in a random order, each on a uint8 image and each returning uint8, with their quirks:

    - brightness and contrast clip to [0, 255] and truncate to integers after each step;
    - contrast scales each channel around that channel's own mean;
    - saturation blends with cv2's grey image and casts to uint8 without clipping: a value above 255 or below 0
      wraps around modulo 256 (numpy's float-to-uint8 cast on x86, as the released runs had);
    - lighting uses the PCA eigenvalues for [0, 1] pixels on [0, 255] pixels, so the shift is below 0.1 of a grey
      level; the truncation to uint8 then lowers a channel by one wherever its shift is negative.

    The released code read BGR images; on RGB images with the eigenvalues and eigenvectors in RGB order every
    step gives the same numbers (contrast and brightness treat channels alike, cv2's grey weights follow the
    channel order).
    """

    def __init__(self, brightness=30.0, contrast=(0.8, 1.2), saturation=0.4, lighting_std=0.1):
        super().__init__()
        self._init(locals())
        self.eigval = PCA_EIGVAL_UNIT  # not scaled to [0, 255]: the quirk
        self.eigvec = PCA_EIGVEC

    def _get_augment_params(self, _):
        return (self.rng.permutation(4),
                self._rand_range(-self.brightness, self.brightness),
                self._rand_range(*self.contrast),
                1 + self._rand_range(-self.saturation, self.saturation),
                self.rng.randn(3) * self.lighting_std)

    def _augment(self, img, params):
        order, delta, contrast, saturation, alpha = params
        x = img
        for op in order:
            if op == 0:
                x = np.clip(x.astype(np.float32) + delta, 0, 255).astype(np.uint8)
            elif op == 1:
                y = x.astype(np.float32)
                mean = y.mean(axis=(0, 1), keepdims=True)
                x = np.clip((y - mean) * contrast + mean, 0, 255).astype(np.uint8)
            elif op == 2:
                grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
                blend = x * saturation + (grey * (1 - saturation))[:, :, None]
                x = (np.trunc(blend).astype(np.int64) % 256).astype(np.uint8)
            else:
                shift = self.eigvec.astype(np.float64).dot(alpha * self.eigval)
                x = np.clip(x + shift, 0, 255).astype(np.uint8)
        return x


class ReleasedResizeShortestEdge(ImageAugmentor):
    """tensorpack 0.2's ResizeShortestEdge: bilinear, both sides truncated (int(scale * side))."""

    def __init__(self, size):
        super().__init__()
        self._init(locals())

    def get_transform(self, img):
        h, w = img.shape[:2]
        scale = self.size * 1.0 / min(h, w)
        return ResizeTransform(h, w, int(scale * h), int(scale * w), cv2.INTER_LINEAR)


def imagenet_train_augmentors(size=224, aug="intended"):
    """intended: our chain (RandomAreaCrop, PhotometricJitter); released: the released code's, with its quirks."""
    if aug == "released":
        return [ReleasedAreaCrop(size), ReleasedColourJitter(), imgaug.Flip(horiz=True)]
    if aug != "intended":
        raise ValueError("ImageNet augmentation must be one of %s, got %r" % (", ".join(IMAGENET_AUGS), aug))
    return [RandomAreaCrop(size), PhotometricJitter(), imgaug.Flip(horiz=True)]


def imagenet_val_augmentors(size=224, aug="intended"):
    """Resize the shortest edge to 256 (for 224 crops), centre crop; cubic (intended) or the released bilinear."""
    edge = int(round(size * 256 / 224))
    resize = (ReleasedResizeShortestEdge(edge) if aug == "released"
              else imgaug.ResizeShortestEdge(edge, cv2.INTER_CUBIC))
    return [resize, imgaug.CenterCrop((size, size))]
