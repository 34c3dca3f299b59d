"""ImageNet (ILSVRC-2012) from its usual folder layout; nothing is downloaded.

    DIR/train/<wnid>/*.JPEG
    DIR/val/<wnid>/*.JPEG                 or   DIR/val/*.JPEG plus DIR/val.txt ("<file name> <label>")
    DIR/synsets.txt (optional)            one wnid per line (anything after the wnid is ignored);
                                          without it the sorted train/ folder names are the classes.

Images are decoded lazily by the dataflow (cv2, converted to RGB); one that cannot be decoded is skipped
with a warning during training instead of stopping a multi-day run.
"""
import os

import cv2

from .. import UserError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
HELP = ("see https://image-net.org/download (ILSVRC-2012): put train/<wnid>/*.JPEG and val/ under the "
        "data directory")


def _images_in(folder):
    with os.scandir(folder) as it:
        return sorted(e.path for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def imagenet_synsets(data_dir):
    path = os.path.join(data_dir, "synsets.txt")
    if os.path.isfile(path):
        with open(path) as f:
            wnids = [line.split()[0] for line in f if line.strip()]
    else:
        train = os.path.join(data_dir, "train")
        if not os.path.isdir(train):
            raise UserError("ImageNet not found: %s is missing; %s" % (train, HELP))
        wnids = sorted(e.name for e in os.scandir(train) if e.is_dir())
    if not wnids:
        raise UserError("no ImageNet classes found in %s (synsets.txt or train/<wnid>/ folders); %s" % (data_dir, HELP))
    return wnids


def imagenet_files(data_dir, split):
    """[(path, label)] for split 'train' or 'val', labels following the synset order."""
    folder = os.path.join(data_dir, split)
    if not os.path.isdir(folder):
        raise UserError("ImageNet %s split not found: %s is missing; %s" % (split, folder, HELP))
    wnids = imagenet_synsets(data_dir)
    label_of = {w: i for i, w in enumerate(wnids)}
    subfolders = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    items = []
    if subfolders:
        for wnid in subfolders:
            if wnid not in label_of:
                raise UserError("folder %s is not a class of synsets.txt; remove it or fix synsets.txt"
                                % os.path.join(folder, wnid))
            files = _images_in(os.path.join(folder, wnid))
            if not files:
                raise UserError("class folder %s holds no .JPEG images; expected the extracted %s images of %s"
                                % (os.path.join(folder, wnid), split, wnid))
            items.extend((f, label_of[wnid]) for f in files)
        return items
    label_file = next((p for p in (os.path.join(data_dir, "val.txt"), os.path.join(folder, "val.txt"))
                       if os.path.isfile(p)), None)
    if label_file is None:
        raise UserError("%s has no class folders and no val.txt label file; give val/<wnid>/ folders or "
                        "%s with lines '<file name> <label>'" % (folder, os.path.join(data_dir, "val.txt")))
    with open(label_file) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                name, label = parts[0], int(parts[1])
            except (IndexError, ValueError):
                raise UserError("%s line %d is %r; expected '<file name> <label>'" % (label_file, n, line.strip()))
            if not 0 <= label < len(wnids):
                raise UserError("%s line %d: label %d outside 0..%d" % (label_file, n, label, len(wnids) - 1))
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise UserError("%s lists %s, which does not exist" % (label_file, path))
            items.append((path, label))
    if not items:
        raise UserError("%s lists no images" % label_file)
    return items


def read_rgb(path):
    """The decoded RGB uint8 image, or None when the file cannot be decoded."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
