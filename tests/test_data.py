import os
import pickle
import socket

import numpy as np
import pytest

from eps_resnet import UserError
from eps_resnet.data import build_dataflow, imagenet_files, load_arrays, per_pixel_mean
from tests import datafiles


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def batches(ds):
    ds.reset_state()
    return list(ds)


def test_cifar10_pickles(tmp_path):
    written = datafiles.write_cifar10(str(tmp_path))
    images, labels = load_arrays("cifar10", "train", str(tmp_path))
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 9
    data, first_labels = written["data_batch_1"]
    # row layout: 1024 red values, 1024 green, 1024 blue, each row-major
    np.testing.assert_array_equal(images[0, :, :, 0].ravel(), data[0, :1024])
    np.testing.assert_array_equal(images[0, :, :, 2].ravel(), data[0, 2048:])
    assert list(labels[:20]) == first_labels
    test_images, _ = load_arrays("cifar10", "test", str(tmp_path))
    assert len(test_images) == 12


def test_cifar100_pickles_and_mean_cache(tmp_path):
    datafiles.write_cifar100(str(tmp_path))
    images, labels = load_arrays("cifar100", "train", str(tmp_path))
    assert images.shape == (30, 32, 32, 3) and labels.max() < 100
    before = sorted(os.listdir(tmp_path))
    reader_only = per_pixel_mean("cifar100", str(tmp_path), write_cache=False)  # a Horovod rank other than 0
    assert sorted(os.listdir(tmp_path)) == before
    mean = per_pixel_mean("cifar100", str(tmp_path))
    np.testing.assert_array_equal(mean, reader_only)
    np.testing.assert_allclose(mean, images.astype(np.float64).mean(axis=0), rtol=1e-6)
    cache = tmp_path / "eps_resnet_mean_cifar100.npz"
    assert cache.is_file()
    with np.load(str(cache)) as saved:
        source = saved["source"]
    np.savez(str(cache), mean=np.full((32, 32, 3), 7.0, np.float32), source=source)
    assert per_pixel_mean("cifar100", str(tmp_path))[0, 0, 0] == 7.0  # a cache of the same files is used as is
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_the_mean_cache_is_recomputed_when_its_source_files_change(tmp_path):
    """A cache that outlived its images (new files under the same names) must not be used: it once shifted a
    run's inputs by 83 grey levels without a word."""
    datafiles.write_cifar10(str(tmp_path), seed=0)
    first = per_pixel_mean("cifar10", str(tmp_path))
    folder = tmp_path / "cifar-10-batches-py"
    for name in ["data_batch_%d" % i for i in range(1, 6)]:  # the same names, brighter images
        with open(str(folder / name), "rb") as f:
            d = pickle.load(f, encoding="bytes")
        d[b"data"] = np.minimum(d[b"data"].astype(np.int32) + 83, 255).astype(np.uint8)
        with open(str(folder / name), "wb") as f:
            pickle.dump(d, f, protocol=2)
    images, _ = load_arrays("cifar10", "train", str(tmp_path))
    again = per_pixel_mean("cifar10", str(tmp_path))
    np.testing.assert_allclose(again, images.astype(np.float64).mean(axis=0), rtol=1e-6)
    assert again.mean() > first.mean() + 40
    np.testing.assert_array_equal(per_pixel_mean("cifar10", str(tmp_path)), again)  # and the new cache is used


def test_svhn_mat_files(tmp_path):
    written = datafiles.write_svhn(str(tmp_path))
    images, labels = load_arrays("svhn", "train", str(tmp_path))
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8  # train + extra
    X, y = written["train"]
    np.testing.assert_array_equal(images[3], X[:, :, :, 3])
    expected = y.ravel().astype(np.int32)
    expected[expected == 10] = 0
    np.testing.assert_array_equal(labels[:15], expected)
    assert labels.min() >= 0 and labels.max() <= 9 and (y == 10).any()
    test_images, _ = load_arrays("svhn", "test", str(tmp_path))
    assert len(test_images) == 7


def test_mean_from_all_splits_as_the_released_data_sets(tmp_path):
    """--mean-from all: CIFAR train + test, SVHN train + extra + test (tensorpack 0.2's get_per_pixel_mean)."""
    cifar = tmp_path / "cifar"
    written = datafiles.write_cifar10(str(cifar))
    pixels = np.concatenate([data for data, _ in written.values()])  # five batches and the test batch
    every = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(per_pixel_mean("cifar10", str(cifar), mean_from="all"), every, rtol=1e-6)
    train_only = per_pixel_mean("cifar10", str(cifar))
    assert np.abs(train_only - every).max() > 1  # another mean, cached under another name
    assert {p for p in os.listdir(cifar) if p.endswith(".npz")} == {"eps_resnet_mean_cifar10_all.npz",
                                                                    "eps_resnet_mean_cifar10.npz"}
    np.testing.assert_array_equal(per_pixel_mean("cifar10", str(cifar), mean_from="all"),
                                  np.load(str(cifar / "eps_resnet_mean_cifar10_all.npz"))["mean"])

    svhn = tmp_path / "svhn"
    svhn.mkdir()
    mats = datafiles.write_svhn(str(svhn))
    X = np.concatenate([mats[name][0] for name in ("train", "test", "extra")], axis=3)
    np.testing.assert_allclose(per_pixel_mean("svhn", str(svhn), mean_from="all"),
                               X.transpose(3, 0, 1, 2).astype(np.float64).mean(axis=0), rtol=1e-6)
    with pytest.raises(UserError, match="--mean-from"):
        per_pixel_mean("svhn", str(svhn), mean_from="test")


@pytest.mark.parametrize("val_flat", [True, False])
def test_imagenet_folders(tmp_path, val_flat):
    datafiles.write_imagenet(str(tmp_path), val_flat=val_flat)
    train = imagenet_files(str(tmp_path), "train")
    assert len(train) == 9 and sorted({label for _, label in train}) == [0, 1, 2]
    val = imagenet_files(str(tmp_path), "val")
    assert [label for _, label in val] == [0, 1, 2]
    ds = build_dataflow("imagenet", "train", 4, data_dir=str(tmp_path), image_size=32)
    out = batches(ds)
    assert len(out) == 2 and out[0][0].shape == (4, 32, 32, 3) and out[0][0].dtype == np.uint8
    val_batches = batches(build_dataflow("imagenet", "val", 2, data_dir=str(tmp_path), image_size=32))
    assert [len(b[1]) for b in val_batches] == [2, 1]  # keeps the last partial batch


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpegs_are_skipped_and_counted(tmp_path, caplog, workers):
    datafiles.write_imagenet(str(tmp_path))
    bad = tmp_path / "train" / "n01443537" / "n01443537_1.JPEG"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    bad_val = tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG"
    bad_val.write_bytes(b"")
    train = build_dataflow("imagenet", "train", 1, data_dir=str(tmp_path), image_size=32, workers=workers)
    train.reset_state()
    if workers == 0:  # one shuffled pass: the 8 readable images, whichever place the broken one drew
        seen = list(train)
        assert len(seen) == 8
    else:  # the flow repeats and arrives out of order: three passes' worth surely includes a skip
        seen = [dp for _, dp in zip(range(24), train)]
    assert all(dp[0].shape == (1, 32, 32, 3) for dp in seen)
    # validation stays one exact pass (strict order) without the unreadable image
    val = batches(build_dataflow("imagenet", "val", 2, data_dir=str(tmp_path), image_size=32, workers=workers))
    assert [len(b[1]) for b in val] == [2] and list(val[0][1]) == [0, 2]
    text = caplog.text
    assert str(bad) in text and "(1 train image(s) skipped so far)" in text
    assert str(bad_val) in text and "(1 val image(s) skipped so far)" in text


def test_a_folder_of_unreadable_images_is_refused(tmp_path):
    datafiles.write_imagenet(str(tmp_path))
    for path in (tmp_path / "train").glob("*/*.JPEG"):
        path.write_bytes(b"broken")
    with pytest.raises(UserError, match="none of 9 images sampled from .* could be decoded"):
        build_dataflow("imagenet", "train", 2, data_dir=str(tmp_path), image_size=32)


def test_batch_larger_than_the_data_set_is_refused(tmp_path):
    with pytest.raises(UserError, match="--batch 5000 is larger than the 1437 training images of digits"):
        build_dataflow("digits", "train", 5000)
    datafiles.write_imagenet(str(tmp_path))
    with pytest.raises(UserError, match="--batch 10 is larger than the 9 training images"):
        build_dataflow("imagenet", "train", 10, data_dir=str(tmp_path), image_size=32)


def test_dataflow_batches_and_workers():
    ds = build_dataflow("digits", "train", 100)
    assert len(ds) == 14  # 1437 // 100, the partial batch is dropped in training
    first = batches(ds)[0]
    assert first[0].shape == (100, 16, 16, 3) and first[1].shape == (100,)
    val = batches(build_dataflow("digits", "test", 100))
    assert [len(b[1]) for b in val] == [100, 100, 100, 60]
    again = batches(build_dataflow("digits", "test", 100))
    np.testing.assert_array_equal(val[3][0], again[3][0])  # deterministic
    with_workers = build_dataflow("digits", "train", 50, workers=2)
    with_workers.reset_state()
    it = iter(with_workers)
    got = [next(it) for _ in range(3)]
    assert all(b[0].shape == (50, 16, 16, 3) for b in got)
    del it


def test_digits_split_is_fixed_and_disjoint():
    train_x, train_y = load_arrays("digits", "train")
    test_x, test_y = load_arrays("digits", "test")
    assert len(train_y) + len(test_y) == 1797 and len(test_y) == 360
    assert set(np.unique(train_y)) == set(range(10))
    np.testing.assert_array_equal(load_arrays("digits", "test")[0], test_x)
    assert train_x.dtype == np.uint8 and train_x.max() > 200
    assert train_x.shape[1:] == (16, 16, 3)
    # the digit sits in a black 2-pixel frame, so the training crops' 2-pixel shifts never cut a stroke
    assert train_x[:, :2].max() == 0 and train_x[:, -2:].max() == 0 and train_x[:, :, :2].max() == 0


# ---- bad input ---------------------------------------------------------------------------------
def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_arrays("cifar10", "train", str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"data_batch_1 is missing; download https://www\.cs\.toronto\.edu"):
        load_arrays("cifar10", "train", str(tmp_path))
    with pytest.raises(UserError, match="test_32x32.mat not found; download"):
        load_arrays("svhn", "test", str(tmp_path))
    with pytest.raises(UserError, match="ImageNet train split not found"):
        imagenet_files(str(tmp_path), "train")


def test_truncated_pickle(tmp_path):
    datafiles.write_cifar10(str(tmp_path))
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="cannot read CIFAR batch .*data_batch_3"):
        load_arrays("cifar10", "train", str(tmp_path))


def test_truncated_mat(tmp_path):
    datafiles.write_svhn(str(tmp_path))
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="cannot read SVHN file .*test_32x32.mat"):
        load_arrays("svhn", "test", str(tmp_path))


def test_empty_class_folder_and_bad_label_file(tmp_path):
    datafiles.write_imagenet(str(tmp_path))
    (tmp_path / "train" / "n01440764").mkdir(exist_ok=True)
    for f in (tmp_path / "train" / "n01440764").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="n01440764 holds no .JPEG images"):
        imagenet_files(str(tmp_path), "train")
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG seven\n")
    with pytest.raises(UserError, match="val.txt line 1"):
        imagenet_files(str(tmp_path), "val")


def test_bad_split_and_batch():
    with pytest.raises(UserError, match="splits 'train' and 'test'"):
        build_dataflow("digits", "val", 10)
    with pytest.raises(UserError, match="batch size must be >= 1"):
        build_dataflow("digits", "train", 0)
    with pytest.raises(UserError, match="unknown dataset"):
        build_dataflow("mnist", "train", 10)


def test_the_registry_holds_every_fact_a_recipe_needs(tmp_path):
    from eps_resnet.data import DATASETS, dataset_info, num_classes_in
    from eps_resnet.plan import CIFAR_STYLE, IMAGENET_STYLE
    from eps_resnet.recipes import RECIPES
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert sorted(RECIPES) == sorted(DATASETS)
    for name, recipe in RECIPES.items():
        info = dataset_info(name)
        assert recipe.style == info.style in (CIFAR_STYLE, IMAGENET_STYLE)
        assert os.path.isfile(os.path.join(root, info.train_command.split()[0]))
        assert num_classes_in(name) == info.num_classes
    # ImageNet's classes are the synsets of the data at hand (a subset of the 1000 trains a smaller head)
    datafiles.write_imagenet(str(tmp_path), wnids=("n01440764", "n01443537"))
    assert num_classes_in("imagenet", str(tmp_path)) == 2
    with pytest.raises(UserError, match="unknown dataset"):
        dataset_info("mnist")
