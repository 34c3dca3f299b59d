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
    assert type(augment.svhn_train_augmentors("released")[0]).__name__ == "ReleasedSvhnAugment"
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


# ---- the released code's chains (tensorpack 0.2 definitions), on crafted images with hand-derived values ----
def test_released_svhn_chain_jitters_the_40x40_canvas_before_the_crop():
    aug = augment.ReleasedSvhnAugment()
    img = np.full((32, 32, 3), 100, np.uint8)
    no_deform = np.zeros((4, 2), np.float32)
    out = aug._augment(img, (5.0, 1.2, no_deform, 0, 7))
    # paste: 100 inside rows/cols 4..35 of a 40x40 zero canvas; brightness +5: 105 inside, 5 on the border;
    # contrast 1.2 around the channel mean of the whole canvas, (1024*105 + 576*5)/1600 = 69:
    # inside (105-69)*1.2+69 = 112.2, border (5-69)*1.2+69 = -7.8 -> 0; crop rows 0..31, cols 7..38; round.
    expected = np.zeros((32, 32, 3), np.uint8)
    expected[4:, :29] = 112
    np.testing.assert_array_equal(out, expected)
    # jittered after the crop, the mean would be the crop's own and the inside would not be 112
    crop_mean = (28 * 29 * 105 + (1024 - 28 * 29) * 5) / 1024
    assert round((105 - crop_mean) * 1.2 + crop_mean) != 112


def test_released_svhn_chain_draws_and_deforms_like_tensorpack_0_2():
    aug = seeded(augment.ReleasedSvhnAugment())
    img = np.random.RandomState(4).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    params = [aug._get_augment_params(img) for _ in range(400)]
    offsets = {p[3] for p in params} | {p[4] for p in params}
    assert offsets == set(range(8))  # 0..7: tensorpack 0.2's RandomCrop never takes the last position
    assert all(-10 <= p[0] <= 10 and 0.8 <= p[1] <= 1.2 and np.abs(p[2]).max() <= 3 for p in params)
    b, c, shifts, y0, x0 = params[0]
    out = aug._augment(img, params[0])
    flat = aug._augment(img, (b, c, np.zeros_like(shifts), y0, x0))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - flat.astype(int)).max() > 20  # the deformation moves pixels


def test_svhn_paper_chain_jitters_the_pasted_image_then_crops():
    chain = augment.svhn_train_augmentors("paper")
    assert [type(a).__name__ for a in chain] == ["CenterPaste", "PaperColorJitter", "RandomCrop"]
    augs = imgaug.AugmentorList(chain)
    for a in chain:
        seeded(a, 5)
    img = np.full((32, 32, 3), 100, np.uint8)
    out = augs.augment(img)
    # the same draws by hand: the jitter's per-pixel factors cover the 40x40 canvas
    jitter, crop = seeded(augment.PaperColorJitter(), 5), seeded(imgaug.RandomCrop((32, 32)), 5)
    canvas = np.zeros((40, 40, 3), np.uint8)
    canvas[4:36, 4:36] = 100
    offset, scale = jitter._get_augment_params(canvas)
    assert scale.shape == (40, 40, 1)
    t = crop.get_transform(canvas)
    np.testing.assert_array_equal(out, t.apply_image(jitter._augment(canvas, (offset, scale))))


def test_released_imagenet_colour_steps_by_hand():
    aug = augment.ReleasedColourJitter()
    only = {"brightness": [0], "contrast": [1], "saturation": [2], "lighting": [3]}

    def step(name, img, delta=0.0, contrast=1.0, saturation=1.0, alpha=(0.0, 0.0, 0.0)):
        return aug._augment(np.asarray(img, np.uint8), (only[name], delta, contrast, saturation, np.asarray(alpha)))

    # brightness +30.7: clipped to 255 and truncated (40.7 -> 40), not rounded
    np.testing.assert_array_equal(step("brightness", [[[10, 250, 100]]], delta=30.7), [[[40, 255, 130]]])
    # contrast 0.8 around each channel's own mean: channel 0 holds 10 and 21 (mean 15.5) -> 11.1, 19.9 -> 11, 19;
    # channel 1 holds 100 twice (unchanged), channel 2 holds 0 and 200 (mean 100) -> 20, 180
    np.testing.assert_array_equal(step("contrast", [[[10, 100, 0]], [[21, 100, 200]]], contrast=0.8),
                                  [[[11, 100, 20]], [[19, 100, 180]]])
    # saturation 1.4 on pure red: cv2's grey is round(0.299 * 255) = 76; 255*1.4 - 0.4*76 = 326.6 -> 326 wraps to
    # 70; 0 - 30.4 -> -30 wraps to 226 (no clip in tensorpack 0.2's Saturation)
    np.testing.assert_array_equal(step("saturation", [[[255, 0, 0]]], saturation=1.4), [[[70, 226, 226]]])
    # lighting with eigenvalues for [0, 1] pixels: alpha (0.1, 0, 0) shifts every channel by about
    # -0.57 * 0.1 * 0.2175 = -0.012 of a grey level, which the truncation turns into -1 (0 stays 0) ...
    np.testing.assert_array_equal(step("lighting", [[[100, 0, 255]]], alpha=(0.1, 0, 0)), [[[99, 0, 254]]])
    # ... and a positive shift of the same size changes nothing
    np.testing.assert_array_equal(step("lighting", [[[100, 0, 255]]], alpha=(-0.1, 0, 0)), [[[100, 0, 255]]])


def test_released_imagenet_crop_and_resize():
    aug = seeded(augment.ReleasedAreaCrop(size=16))
    img = np.zeros((40, 50, 3), np.uint8)
    right_edge = 0
    for _ in range(3000):
        t = aug.get_transform(img)
        if isinstance(t, TransformList):
            crop = t.tfms[0]
            assert 0.75 * 0.9 <= crop.w / crop.h <= 1.333 / 0.9  # sides truncated to integers
            assert crop.w == 50 or crop.x0 + crop.w < 50  # the last offset is never drawn
            right_edge += crop.x0 + crop.w == 50
        assert t.apply_image(img).shape == (16, 16, 3)
    assert right_edge > 0  # reached only by full-width crops
    # validation: tensorpack 0.2 truncated the long side (300x500 -> 256x426; ours rounds to 427) and used bilinear
    released = imgaug.AugmentorList(augment.imagenet_val_augmentors(224, "released"))
    ours = imgaug.AugmentorList(augment.imagenet_val_augmentors(224))
    assert released.augmentors[0].get_transform(np.zeros((300, 500, 3), np.uint8)).apply_image(
        np.zeros((300, 500, 3), np.uint8)).shape == (256, 426, 3)
    step = np.zeros((300, 500, 3), np.uint8)
    step[:, 250:] = 255
    assert released.augment(step).shape == ours.augment(step).shape == (224, 224, 3)
    assert not np.array_equal(released.augment(step), ours.augment(step))  # bilinear vs cubic at the edge
    with pytest.raises(ValueError):
        augment.imagenet_train_augmentors(224, "sepia")
