"""The command line that trains a recorded recipe: the inverse of the training scripts' flags.

Every command a tool prints for the user to run (the frontier's retraining, the export report's) is built here from
the run's recipe as run.json records it, so it trains with the run's settings rather than the script's defaults.
tests/test_commands.py parses each command with the script's own parser and gets the recipe back.
"""
import dataclasses
import json
import shlex
from typing import Tuple

from .data import dataset_info
from .options import OPTIONS
from .recipes import RECIPES

@dataclasses.dataclass(frozen=True)
class TrainingCommand:
    argv: Tuple[str, ...]                  # "python", the script, its flags
    unreproducible: Tuple[str, ...] = ()   # "field: the run's value (the script's value)" no flag can set

    def __str__(self):
        return " ".join(shlex.quote(a) for a in self.argv)

    def note(self) -> str:
        """What the command cannot carry over, or '' when it reproduces every setting."""
        if not self.unreproducible:
            return ""
        return ("no flag sets %s; the command trains with its script's value%s"
                % ("; ".join(self.unreproducible), "s" if len(self.unreproducible) > 1 else ""))


def training_command(recipe: dict, **changes) -> TrainingCommand:
    """The command that trains `recipe` (a run.json recipe) with `changes` (recipe fields, e.g. epsilon=3.0,
    load=LOGDIR, logdir=NEW) applied: every setting that differs from the script's default is spelled out, and
    the network, ε and schedule always are."""
    r = dict(recipe, **_jsonable(changes))
    info = dataset_info(r["dataset"])
    base = _jsonable(dataclasses.asdict(RECIPES[r["dataset"]]))
    argv = ["python"] + info.train_command.split()
    shown = {"dataset"}

    def flag(field, *args):  # the field's flag (eps_resnet.options), its shortest spelling
        argv.append(OPTIONS[field].names[0] if field in OPTIONS else field)
        argv.extend(str(a) for a in args)

    def differs(field):
        shown.add(field)
        return field in r and r[field] != base[field]

    if info.style == "imagenet":
        flag("depth", r["depth"])
        if differs("image_size"):
            flag("image_size", r["image_size"])
        if differs("imagenet_aug"):
            flag("imagenet_aug", r["imagenet_aug"])
        if differs("fake_data"):
            flag("fake_data")
    else:
        flag("num_units", r["num_units"])
        if differs("width"):
            flag("width", r["width"])
        if differs("bottleneck"):
            flag("bottleneck")
        if differs("mean_from"):
            flag("mean_from", r["mean_from"])
        if r["dataset"] == "svhn" and differs("svhn_jitter"):
            flag("svhn_jitter", r["svhn_jitter"])
    shown.update(("depth", "num_units", "svhn_jitter", "image_size"))

    plain = r.get("epsilon") is None
    if plain:
        flag("--plain")
    elif r.get("epsilon_tolerance") is not None:
        flag("epsilon", "auto")
        flag("epsilon_tolerance", number(r["epsilon_tolerance"]))
        flag("holdout", r["holdout"])
        flag("epsilon_start_epoch", r["epsilon_start_epoch"])
    else:
        flag("epsilon", number(r["epsilon"]))
        flag("epsilon_start_epoch", r["epsilon_start_epoch"])
    shown.update(("epsilon_tolerance", "holdout"))
    flag("max_epoch", r["max_epoch"])
    shown.update(("epsilon", "epsilon_start_epoch", "max_epoch"))
    if differs("batch"):
        flag("batch", r["batch"])
    if differs("steps_per_epoch") and r["steps_per_epoch"] is not None:
        flag("steps_per_epoch", r["steps_per_epoch"])
    if differs("side_weight") and r["side_weight"] == 0:
        flag("side_weight")  # --no-side
    if differs("seed") and r["seed"] is not None:
        flag("seed", r["seed"])
    for field in ("channel_penalty", "channel_variance"):
        if differs(field):
            flag(field, number(r[field]))
    # how to run
    for field in ("data_dir", "workers", "trainer", "histogram_blocks", "load", "logdir"):
        if differs(field) and r[field] is not None:
            flag(field, r[field])
    if differs("gpus") and r["gpus"]:
        flag("gpus", ",".join(map(str, r["gpus"])))
    for field in ("scale_lr", "xla", "grappler", "resume"):
        if differs(field) and r[field]:
            flag(field)

    left = [f for f in base if f not in shown and f in r and r[f] != base[f]]
    left += [f for f in ("steps_per_epoch", "side_weight", "seed") if f in r and r[f] != base[f]
             and f not in left and not _spelled(f, r)]
    return TrainingCommand(tuple(argv), tuple("%s %s (%s)" % (f, _show(r[f]), _show(base[f])) for f in sorted(left)))


def _spelled(field: str, r: dict) -> bool:
    """Whether the flag that sets `field` could say the run's value (None and partial side weights cannot)."""
    return {"steps_per_epoch": r["steps_per_epoch"] is not None, "side_weight": r["side_weight"] == 0,
            "seed": r["seed"] is not None}[field]


def _jsonable(values: dict) -> dict:
    return json.loads(json.dumps(values))  # tuples as lists, like run.json


def number(x: float) -> str:
    """`x` as short as it can be written and read back exactly."""
    short = "%g" % x
    return short if float(short) == x else repr(float(x))


def _show(value) -> str:
    return json.dumps(value)
