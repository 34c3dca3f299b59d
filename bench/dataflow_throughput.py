"""Images/second of the training dataflows, and our ImageNet augmentation against tensorpack's stock chain.

Writes synthetic datasets in the real on-disk formats to a temporary directory (CIFAR-10 pickles, SVHN
.mat, ImageNet JPEGs of typical size), then times each training pipeline with 1 worker process and with
one per core. The ImageNet comparison runs decode + augment per image, ours and tensorpack's
ResNet-example chain at the same settings, interleaved in this run (target ratio >= 1.0).

Then whether the CIFAR pipeline keeps up with training: its images/s at the default --workers against the images/s
a plain ResNet-32 training step consumes at batch 128, trained as train_cifar.py trains (bench/peers.py's worker),
measured in this run (target: the pipeline delivers >= 2x).

    python bench/dataflow_throughput.py [--seconds 5]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eps_resnet  # noqa: E402,F401
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from eps_resnet.data import augment, build_dataflow, imagenet_files  # noqa: E402
from eps_resnet.data.imagenet import read_rgb  # noqa: E402
from eps_resnet.recipes import CIFAR10  # noqa: E402
from tensorpack.dataflow import imgaug  # noqa: E402
from tests import datafiles  # noqa: E402


def images_per_second(ds, seconds):
    ds.reset_state()
    it = iter(ds)
    next(it)  # start-up (fork, first batch) is not throughput
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            n += len(next(it)[1])
        except StopIteration:
            it = iter(ds)
    return n / (time.perf_counter() - t0)


def stock_chain(size):
    """tensorpack's ResNet-example (fb.resnet.torch) chain with the paper's Sec. 4 settings; works on BGR."""
    eigval = augment.PCA_EIGVAL[::-1]
    eigvec = augment.PCA_EIGVEC[::-1, ::-1]
    return imgaug.AugmentorList([
        imgaug.GoogleNetRandomCropAndResize(target_shape=size, interp=cv2.INTER_CUBIC),
        imgaug.RandomOrderAug([imgaug.Brightness(30, clip=False), imgaug.Contrast((0.8, 1.2), rgb=False, clip=False),
                               imgaug.Saturation(0.4, rgb=False), imgaug.Lighting(0.1, eigval, eigvec)]),
        imgaug.Clip(), imgaug.Flip(horiz=True), imgaug.ToUint8()])


def write_imagenet_like(root, count=64):
    rng = np.random.RandomState(0)
    for k in range(count):
        folder = os.path.join(root, "train", "n%08d" % (k % 8))
        os.makedirs(folder, exist_ok=True)
        # smooth content compresses and decodes like photos, unlike noise
        small = rng.randint(0, 256, (24, 32, 3)).astype(np.uint8)
        img = cv2.resize(small, (500, 375), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(folder, "img%d.JPEG" % k), img)


def compare_imagenet_chains(root, seconds):
    paths = [p for p, _ in imagenet_files(root, "train")]
    ours = imgaug.AugmentorList(augment.imagenet_train_augmentors(224))
    stock = stock_chain(224)
    ours.reset_state()
    stock.reset_state()
    runs = {"ours": lambda p: ours.augment(read_rgb(p)[0]),
            "stock": lambda p: stock.augment(cv2.imread(p, cv2.IMREAD_COLOR))}
    counts = {k: 0 for k in runs}
    spent = {k: 0.0 for k in runs}
    rounds = 10
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(reversed(list(runs)))):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds:
                runs[name](paths[counts[name] % len(paths)])
                counts[name] += 1
            spent[name] += time.perf_counter() - t0
    return {k: counts[k] / spent[k] for k in runs}


def keeps_up(root, seconds, batch=128):
    """CIFAR pipeline at the default worker count against what a training step consumes, alternated 3 times."""
    from bench.peers import Contender
    workers = CIFAR10.dataflow_workers()
    log = open(os.path.join(root, "step.log"), "w")
    step = Contender("training step", [sys.executable, os.path.join(ROOT, "bench", "peers.py"), "--worker", "plain",
                                       "--batch", str(batch), "--logdir", os.path.join(root, "run")], log)
    try:
        step.ready()
        pipeline, consumed = [], []
        for _ in range(3):
            pipeline.append(images_per_second(build_dataflow("cifar10", "train", batch, data_dir=root,
                                                             workers=workers), seconds))
            consumed.append(batch / step.time(max(3, int(seconds / 0.4))))
    finally:
        step.close()
    p, c = np.median(pipeline), np.median(consumed)
    print("CIFAR at the default --workers (%d): pipeline %.0f im/s, a ResNet-32 training step at batch %d consumes "
          "%.0f im/s: ratio %.1f (target >= 2)" % (workers, p, batch, c, p / c))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="time per measurement (default: %(default)s)")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    root = tempfile.mkdtemp(prefix="eps-resnet-bench-")
    try:
        datafiles.write_cifar10(root, per_batch=2000, test=10)
        datafiles.write_svhn(root, sizes=(("train", 5000), ("extra", 5000), ("test", 10)))
        write_imagenet_like(root)
        print("%-10s %14s %14s" % ("pipeline", "1 process", "%d processes" % cores))
        for name, kwargs in (("cifar10", {}), ("svhn", {}), ("imagenet", {"image_size": 224})):
            batch = 32 if name == "imagenet" else 128
            rates = [images_per_second(build_dataflow(name, "train", batch, data_dir=root, workers=w, **kwargs),
                                       args.seconds) for w in (1, cores)]
            print("%-10s %10.0f im/s %10.0f im/s" % (name, rates[0], rates[1]))
        r = compare_imagenet_chains(root, 2 * args.seconds)
        print("ImageNet decode+augment, one process: ours %.0f im/s, tensorpack stock chain %.0f im/s, "
              "ratio %.2f (target >= 1.0)" % (r["ours"], r["stock"], r["ours"] / r["stock"]))
        keeps_up(root, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
