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

# AlexNet PCA lighting, RGB order, for pixel values in [0, 255]
PCA_EIGVAL = np.asarray([0.2175, 0.0188, 0.0045], np.float32) * 255.0
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


def released_svhn_jitter():
    """The released code's SVHN jitter: brightness ±10, contrast 0.8–1.2 per image, slow Gaussian deformation."""
    return [imgaug.Brightness(10),
            imgaug.Contrast((0.8, 1.2)),
            GaussianDeform([(0.2, 0.2), (0.2, 0.8), (0.8, 0.8), (0.8, 0.2)], (32, 32), 0.2, 3)]


def svhn_train_augmentors(jitter="paper"):
    """CIFAR pad-and-crop without the flip (digits are not mirror-symmetric), plus colour jitter."""
    if jitter == "paper":
        extra = [PaperColorJitter()]
    elif jitter == "released":
        extra = released_svhn_jitter()
    elif jitter == "none":
        extra = []
    else:
        raise ValueError("SVHN jitter must be 'paper', 'released' or 'none', got %r" % (jitter,))
    return cifar_train_augmentors(flip=False) + extra


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


def imagenet_train_augmentors(size=224):
    return [RandomAreaCrop(size), PhotometricJitter(), imgaug.Flip(horiz=True)]


def imagenet_val_augmentors(size=224):
    """Resize the shortest edge to 256 (for 224 crops), centre crop."""
    return [imgaug.ResizeShortestEdge(int(round(size * 256 / 224)), cv2.INTER_CUBIC),
            imgaug.CenterCrop((size, size))]
