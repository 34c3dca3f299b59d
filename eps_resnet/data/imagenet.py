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
from .checks import size_problem

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
HELP = ("see https://image-net.org/download (ILSVRC-2012): put train/<wnid>/*.JPEG and val/ under the "
        "data directory")


def _entries(folder, want_dirs):
    """Sorted names of the sub-folders (want_dirs) or image files of `folder`; a listing the file system refuses
    (a symlink loop, permissions, a vanished folder) is one error naming the path."""
    found = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                try:
                    if want_dirs and e.is_dir():
                        found.append(e.name)
                    elif not want_dirs and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file():
                        found.append(e.name)
                except OSError as err:
                    raise UserError("cannot read %s (%s); remove or fix it" % (e.path, err.strerror))
    except OSError as err:
        raise UserError("cannot read %s (%s); remove or fix it" % (folder, err.strerror))
    return sorted(found)


def _read_lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("cannot read %s (%s); it must be a text file of one entry per line" % (path, e))


def _images_in(folder):
    return [os.path.join(folder, name) for name in _entries(folder, want_dirs=False)]


def imagenet_synsets(data_dir):
    path = os.path.join(data_dir, "synsets.txt")
    if os.path.isfile(path):
        wnids = [line.split()[0] for line in _read_lines(path) if line.strip()]
    else:
        train = os.path.join(data_dir, "train")
        if not os.path.isdir(train):
            raise UserError("ImageNet not found: %s is missing; %s" % (train, HELP))
        wnids = _entries(train, want_dirs=True)
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
    subfolders = _entries(folder, want_dirs=True)
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
    for n, line in enumerate(_read_lines(label_file), 1):
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
    """(the decoded RGB uint8 image, None), or (None, why it cannot be decoded). Never raises: a decoder error, a
    file that vanished or an absurd declared size (checked on the header, before decoding) is a reason."""
    problem = size_problem(path)
    if problem:
        return None, problem
    try:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
    except Exception as e:  # cv2.error for what its header checks refuse, MemoryError, ...
        return None, "cannot be decoded (%s)" % (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        return None, "cannot be decoded"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), None
