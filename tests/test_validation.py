"""Data that lies, records of the wrong shape and flags that meant something else: refused in one place each,
on real files of the real formats that the tests write."""
import json
import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from eps_resnet import UserError, cli
from eps_resnet.data import build_dataflow, imagenet_files, load_arrays
from eps_resnet.data.imagenet import read_rgb
from eps_resnet.recipes import CIFAR10, DIGITS_DEMO
from eps_resnet.rundir import read_records, read_stats
from tests import datafiles


def rewrite_cifar_batch(path, changes):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    d.update(changes)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


@pytest.mark.parametrize("bad", [300.0, -5.0, np.nan])
def test_cifar_pixels_that_are_not_bytes_are_refused(tmp_path, bad):
    datafiles.write_cifar10(str(tmp_path))
    path = str(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    data = np.full((20, 3072), 100.0)
    data[4, 7] = bad
    rewrite_cifar_batch(path, {b"data": data})
    with pytest.raises(UserError, match="data_batch_3: the train pixels are float64, expected integers 0..255"):
        load_arrays("cifar10", "train", str(tmp_path))


def test_integer_pixels_out_of_range_and_bad_labels_are_refused(tmp_path):
    datafiles.write_cifar10(str(tmp_path))
    path = str(tmp_path / "cifar-10-batches-py" / "test_batch")
    rewrite_cifar_batch(path, {b"data": np.full((12, 3072), 256, np.int64)})
    with pytest.raises(UserError, match="pixels range over 256..256, outside 0..255"):
        load_arrays("cifar10", "test", str(tmp_path))
    rewrite_cifar_batch(path, {b"data": np.zeros((12, 3072), np.uint8), b"labels": [0.5] * 12})
    with pytest.raises(UserError, match="labels are not whole numbers"):
        load_arrays("cifar10", "test", str(tmp_path))
    rewrite_cifar_batch(path, {b"data": np.zeros((12, 3000), np.uint8), b"labels": [0] * 12})
    with pytest.raises(UserError, match="data of shape 12x3000, expected N x 3072"):
        load_arrays("cifar10", "test", str(tmp_path))


def test_a_split_with_no_images_is_refused(tmp_path):
    """A CIFAR test split of 0 images once gave 'validation error 0.0000 (accuracy 100.00%)', exit 0."""
    datafiles.write_cifar10(str(tmp_path), test=0)
    with pytest.raises(UserError, match="the test split holds no images"):
        load_arrays("cifar10", "test", str(tmp_path))
    svhn = tmp_path / "svhn"
    svhn.mkdir()
    datafiles.write_svhn(str(svhn), sizes=(("train", 5), ("test", 0), ("extra", 3)))
    with pytest.raises(UserError, match="test_32x32.mat: the test split holds no images"):
        load_arrays("svhn", "test", str(svhn))
    assert len(load_arrays("svhn", "train", str(svhn))[0]) == 8


def jpeg_declaring(path, width, height):
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    with open(path, "wb") as f:
        f.write(bytes(data))


def test_absurd_image_sizes_are_refused_before_decoding(tmp_path):
    """OpenCV raised on a header claiming 50000x50000 pixels, and nothing caught it."""
    path = str(tmp_path / "huge.JPEG")
    jpeg_declaring(path, 50000, 50000)
    image, problem = read_rgb(path)
    assert image is None and "declares 50000x50000 pixels" in problem
    png = str(tmp_path / "wide.png")
    cv2.imwrite(png, np.zeros((2, 3, 3), np.uint8))
    data = bytearray(open(png, "rb").read())
    data[16:24] = struct.pack(">II", 40000, 2)
    open(png, "wb").write(bytes(data))
    assert "declares 40000x2 pixels" in read_rgb(png)[1]
    jpeg_declaring(path, 60, 40)  # a sane header on a truncated stream: a reason, not an exception
    image, problem = read_rgb(path)
    assert (image is None) == (problem is not None)


def test_an_imagenet_tree_with_a_symlink_loop_is_one_error(tmp_path):
    data = tmp_path / "imagenet"
    datafiles.write_imagenet(str(data))
    loop = data / "train" / "n09999999"
    os.symlink(str(loop), str(loop))
    with pytest.raises(UserError, match="cannot read .*n09999999 .*Too many levels of symbolic links"):
        imagenet_files(str(data), "train")


def test_most_images_unreadable_is_an_error_not_an_endless_skip(tmp_path):
    data = tmp_path / "imagenet"
    datafiles.write_imagenet(str(data), per_class=80)
    files = sorted((data / "train").glob("*/*.JPEG"))
    for path in files[::2] + files[1::4]:
        path.write_bytes(b"")
    for path in files[:16:2]:  # the start-up sample still finds readable images
        jpeg_declaring(str(path), 30, 30)
    ds = build_dataflow("imagenet", "train", 4, str(data), workers=0, image_size=32)
    ds.reset_state()
    with pytest.raises(UserError, match="could not be decoded"):
        for _ in range(200):
            next(iter(ds))


def test_records_of_the_wrong_shape_are_damaged_records(tmp_path):
    good = {"epoch": 1, "global_step": 3, "epsilon": 0.0, "learning_rate": 0.1, "discarded_cnt": 0.0,
            "lr_reset": False, "blocks": {"res1.0": {"is_discarded": 0.0, "response_max": 2.0,
                                                     "kernels": {"norm": 1.0, "abs_max": 0.1, "percentiles": [0.0]}}}}
    for bad in ({"blocks": []}, {"blocks": {"res1.0": {"is_discarded": "x"}}}, {"epoch": 0},
                {"blocks": {"res1.0": dict(good["blocks"]["res1.0"], kernels={"norm": None})}}):
        path = tmp_path / "discards.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "epoch": 2, **bad}) + "\n")
        with pytest.raises(UserError, match="line 2 is not an epoch record"):
            read_records(str(tmp_path))
        assert [r["epoch"] for r in read_records(str(tmp_path), warn=lambda m: None, strict=False)] == [1]
    (tmp_path / "stats.json").write_text(json.dumps([{"epoch_num": 1, "val_error": []}, "x", {"epoch_num": 2}]))
    assert read_stats(str(tmp_path)) == [{"epoch_num": 1}, {"epoch_num": 2}]


def parse(recipe, *argv):
    parser = cli.base_parser("", recipe, cli.cifar_network_flags(recipe))
    return cli.recipe_from_args(recipe, parser.parse_args(list(argv)))


def test_a_zero_the_user_typed_is_not_replaced_by_a_default():
    """--max-epoch 0 trained the default 1000 epochs (`args.max_epoch or default`)."""
    with pytest.raises(UserError, match="--max-epoch must be >= 1, got 0"):
        parse(CIFAR10, "--max-epoch", "0").validate()
    assert parse(CIFAR10, "--max-epoch", "7").max_epoch == 7
    assert parse(CIFAR10, "--plain").max_epoch == CIFAR10.plain_max_epoch
    with pytest.raises(UserError, match="--epsilon-start must be >= 0"):
        parse(CIFAR10, "--epsilon-start", "-1").validate()
    import dataclasses
    with pytest.raises(UserError, match="--image-size must be >= 32"):
        dataclasses.replace(CIFAR10, image_size=0).validate()


@pytest.mark.parametrize("argv,says", [(("-e", "nan"), "--epsilon must be"), (("-e", "inf"), "--epsilon must be a finite"),
                                       (("--channel-penalty", "inf"), "--channel-penalty must be a finite"),
                                       (("-e", "auto", "--epsilon-start", "1", "--epsilon-tolerance", "inf"),
                                        "--epsilon-tolerance must be a finite")])
def test_a_number_the_user_typed_must_be_finite(argv, says):
    with pytest.raises(UserError, match=says):
        parse(CIFAR10, *argv).validate()


def test_a_network_too_large_for_the_machine_is_refused_before_allocation():
    from eps_resnet.recipes import build_plan, check_fits_in_memory, machine_memory_bytes
    huge = parse(DIGITS_DEMO, "--width", "1000").validate()
    with pytest.raises(UserError, match=r"WRN-34-1000 with .* parameters needs at least .* GB to train at batch 32, "
                                        r"more than this machine's"):
        check_fits_in_memory(build_plan(huge), huge)
    small = parse(DIGITS_DEMO).validate()
    check_fits_in_memory(build_plan(small), small)
    assert build_plan(small).training_bytes(32) < machine_memory_bytes() / 100


def test_output_into_a_closed_pipe_ends_quietly():
    """`... | head -1` closes the pipe early: the command stops without a traceback (exit 141, as a shell reports
    a command that met a closed pipe), however much it still had to print."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "train_cifar.py", "--dry-run", "-n", "125"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command printed anything
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err.decode()[-2000:]
    assert b"Traceback" not in err and b"Exception ignored" not in err, err.decode()[-2000:]


def test_the_option_table_covers_every_recipe_field_and_each_script_takes_its_flags(monkeypatch):
    """eps_resnet.options is the one definition of the recipe's options: every Recipe field has an entry (with its
    resume rule), and every flag the table names is taken by each training script that sets that field."""
    import argparse
    import dataclasses
    import train_cifar
    import train_imagenet
    import train_svhn
    from eps_resnet.options import NEITHER, OPERATIONAL, OPTIONS, SHAPING
    from eps_resnet.recipes import Recipe
    assert sorted(OPTIONS) == sorted(f.name for f in dataclasses.fields(Recipe))
    assert {o.resume for o in OPTIONS.values()} == {SHAPING, OPERATIONAL, NEITHER}
    shared = ["data_dir", "epsilon", "epsilon_tolerance", "holdout", "epsilon_start_epoch", "channel_penalty",
              "channel_variance", "gpus", "trainer", "scale_lr", "logdir", "resume", "load", "max_epoch",
              "steps_per_epoch", "batch", "seed", "side_weight", "workers", "xla", "grappler", "histogram_blocks"]
    cifar_style = ["num_units", "width", "bottleneck"]
    per_script = {train_cifar: shared + cifar_style + ["mean_from"],
                  train_svhn: shared + cifar_style + ["mean_from", "svhn_jitter"],
                  train_imagenet: shared + ["depth", "fake_data", "image_size", "imagenet_aug"]}
    parse = argparse.ArgumentParser.parse_args
    for script, fields in per_script.items():
        taken = set()

        def noting_flags(parser, *args, **kwargs):
            taken.update(s for a in parser._actions for s in a.option_strings)
            return parse(parser, *args, **kwargs)
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", noting_flags)
        script.recipe_from_command_line(["--dry-run"])
        missing = [name for field in fields for name in OPTIONS[field].names if name not in taken]
        assert not missing, (script.__name__, missing)


def test_a_towers_batch_is_the_total_shared_over_the_gpus_or_the_batch_itself():
    import dataclasses
    from eps_resnet.recipes import IMAGENET
    assert dataclasses.replace(CIFAR10, gpus=(0, 1)).batch_per_tower == 128  # CIFAR's --batch is per GPU
    assert dataclasses.replace(IMAGENET, gpus=(0, 1, 2, 3)).batch_per_tower == 64  # ImageNet's is the total
    assert IMAGENET.batch_per_tower == 256  # on the CPU, one tower
