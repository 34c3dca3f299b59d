import numpy as np
import pytest

from eps_resnet.data import augment
from tensorpack.dataflow import imgaug
from tensorpack.dataflow.imgaug.transform import CropTransform, TransformList


def seeded(aug, seed=0):
    aug.rng = np.random.RandomState(seed)
    return aug


def test_random_area_crop_bounds():
    aug = seeded(augment.RandomAreaCrop(size=64))
    img = np.zeros((300, 400, 3), np.uint8)
    areas, aspects = [], []
    for _ in range(2000):
        t = aug.get_transform(img)
        if isinstance(t, TransformList):
            crop = [x for x in t.tfms if isinstance(x, CropTransform)][0]
            areas.append(crop.h * crop.w / (300 * 400))
            aspects.append(crop.w / crop.h)
        assert aug.augment(img).shape == (64, 64, 3)
    areas, aspects = np.array(areas), np.array(aspects)
    assert len(areas) > 1800
    assert areas.min() >= 0.08 * 0.97 and areas.max() <= 1.0
    assert aspects.min() >= 0.75 * 0.97 and aspects.max() <= 4 / 3 * 1.03
    assert areas.min() < 0.12 and areas.max() > 0.9  # the whole range is used


def test_random_area_crop_falls_back_to_whole_image():
    aug = seeded(augment.RandomAreaCrop(size=16, area=(5.0, 6.0)))  # never fits
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    assert aug.augment(img).shape == (16, 16, 3)


def test_flip_rate_near_half():
    augs = imgaug.AugmentorList(augment.cifar_train_augmentors(pad=0))
    augs.reset_state()
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :16] = 255
    flips = sum(int(augs.augment(img)[0, 0, 0] == 0) for _ in range(4000))
    assert 0.46 < flips / 4000 < 0.54


def test_cifar_pad_and_crop_shifts_within_four_pixels():
    augs = imgaug.AugmentorList(augment.cifar_train_augmentors(flip=False))
    augs.reset_state()
    img = np.zeros((32, 32, 3), np.uint8)
    img[10, 10] = 255
    positions = {tuple(np.argwhere(augs.augment(img)[:, :, 0] == 255)[0]) for _ in range(500)}
    rows = [p[0] for p in positions]
    cols = [p[1] for p in positions]
    assert min(rows) == 6 and max(rows) == 14 and min(cols) == 6 and max(cols) == 14


def test_svhn_paper_jitter_offset_and_scale():
    aug = seeded(augment.PaperColorJitter())
    rng = np.random.RandomState(1)
    img = rng.randint(60, 190, size=(32, 32, 3)).astype(np.uint8)  # away from 0/255: no clipping
    x = img.astype(np.float64)
    for _ in range(50):
        offset, scale = aug._get_augment_params(img)
        assert -10 <= offset <= 10 and scale.min() >= 0.8 and scale.max() <= 1.2
        out = aug._augment(img, (offset, scale)).astype(np.float64)
        # the pixel's mean moves by the one image-wide offset (up to rounding)
        shift = out.mean(axis=2) - x.mean(axis=2)
        assert np.abs(shift - offset).max() <= 0.5 + 1e-6
        # the residual around the pixel mean is scaled by the pixel's factor
        res_in = x - x.mean(axis=2, keepdims=True)
        res_out = out - out.mean(axis=2, keepdims=True)
        big = np.abs(res_in) > 20
        ratio = res_out[big] / res_in[big]
        assert ratio.min() > 0.8 - 0.05 and ratio.max() < 1.2 + 0.05
    offsets = [aug._get_augment_params(img)[0] for _ in range(500)]
    assert min(offsets) < -8 and max(offsets) > 8


def test_svhn_jitter_clips_to_valid_range():
    aug = seeded(augment.PaperColorJitter())
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4] = 255
    img[:, :, 1] = 128
    for _ in range(30):
        out = aug.augment(img)
        assert out.dtype == np.uint8
        assert out[:4, :, 0].min() >= 230  # 255 + positive offset saturates instead of wrapping to small values
    assert augment.svhn_train_augmentors("released")[-1].__class__.__name__ == "GaussianDeform"
    with pytest.raises(ValueError):
        augment.svhn_train_augmentors("sepia")


def test_photometric_jitter_clips_and_order_varies():
    aug = seeded(augment.PhotometricJitter())
    bright = np.full((16, 16, 3), 250, np.uint8)
    for _ in range(50):
        out = aug.augment(bright)
        assert out.dtype == np.uint8 and out.min() > 150  # no uint8 wrap-around
    orders = {tuple(aug._get_augment_params(bright)[0]) for _ in range(300)}
    assert len(orders) == 24  # all permutations of the four operations occur
    img = np.random.RandomState(2).randint(0, 256, (16, 16, 3)).astype(np.uint8)
    _, delta, contrast, sat, alpha = aug._get_augment_params(img)
    alpha = np.array([1.0, -1.0, 0.5], np.float32)
    # brightness commutes with contrast and saturation; lighting (a per-channel shift) does not
    a = aug._augment(img, (np.array([3, 1, 2, 0]), np.float32(5), np.float32(1.2), sat, alpha))
    b = aug._augment(img, (np.array([1, 3, 2, 0]), np.float32(5), np.float32(1.2), sat, alpha))
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0  # the order changes the result


def test_same_seed_same_augmentation():
    img = np.random.RandomState(3).randint(0, 256, (48, 64, 3)).astype(np.uint8)
    outs = []
    for _ in range(2):
        augs = augment.imagenet_train_augmentors(32)
        chain = imgaug.AugmentorList(augs)  # (re)seeds its members when built, so seed afterwards
        for a in augs:
            seeded(a, 7)
        outs.append([chain.augment(img) for _ in range(5)])
    for x, y in zip(*outs):
        np.testing.assert_array_equal(x, y)


def test_imagenet_validation_resize_and_centre_crop():
    augs = imgaug.AugmentorList(augment.imagenet_val_augmentors(224))
    img = np.zeros((300, 500, 3), np.uint8)
    img[150, 250] = 255
    out = augs.augment(img)
    assert out.shape == (224, 224, 3)
    assert tuple(np.unravel_index(out[:, :, 0].argmax(), out.shape[:2])) in {(111, 111), (112, 112), (111, 112), (112, 111)}
