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

    def flag(name, *args):
        argv.append(name)
        argv.extend(str(a) for a in args)

    def differs(field):
        shown.add(field)
        return field in r and r[field] != base[field]

    if info.style == "imagenet":
        flag("-d", r["depth"])
        if differs("image_size"):
            flag("--image-size", r["image_size"])
        if differs("imagenet_aug"):
            flag("--aug", r["imagenet_aug"])
        if differs("fake_data"):
            flag("--fake")
    else:
        flag("-n", r["num_units"])
        if differs("width"):
            flag("--width", r["width"])
        if differs("bottleneck"):
            flag("--bottleneck")
        if differs("mean_from"):
            flag("--mean-from", r["mean_from"])
        if r["dataset"] == "svhn" and differs("svhn_jitter"):
            flag("--jitter", r["svhn_jitter"])
    shown.update(("depth", "num_units", "svhn_jitter", "image_size"))

    plain = r.get("epsilon") is None
    if plain:
        flag("--plain")
    elif r.get("epsilon_tolerance") is not None:
        flag("-e", "auto")
        flag("--epsilon-tolerance", number(r["epsilon_tolerance"]))
        flag("--holdout", r["holdout"])
        flag("--epsilon-start", r["epsilon_start_epoch"])
    else:
        flag("-e", number(r["epsilon"]))
        flag("--epsilon-start", r["epsilon_start_epoch"])
    shown.update(("epsilon_tolerance", "holdout"))
    flag("--max-epoch", r["max_epoch"])
    shown.update(("epsilon", "epsilon_start_epoch", "max_epoch"))
    if differs("batch"):
        flag("--batch", r["batch"])
    if differs("steps_per_epoch") and r["steps_per_epoch"] is not None:
        flag("--steps-per-epoch", r["steps_per_epoch"])
    if differs("side_weight") and r["side_weight"] == 0:
        flag("--no-side")
    if differs("seed") and r["seed"] is not None:
        flag("--seed", r["seed"])
    for field, name in (("channel_penalty", "--channel-penalty"), ("channel_variance", "--channel-variance")):
        if differs(field):
            flag(name, number(r[field]))
    # how to run
    for field, name in (("data_dir", "--data"), ("workers", "--workers"), ("trainer", "--trainer"),
                        ("histogram_blocks", "--histogram-blocks"), ("load", "--load"), ("logdir", "--logdir")):
        if differs(field) and r[field] is not None:
            flag(name, r[field])
    if differs("gpus") and r["gpus"]:
        flag("--gpu", ",".join(map(str, r["gpus"])))
    for field, name in (("scale_lr", "--scale-lr"), ("xla", "--xla"), ("grappler", "--grappler"),
                        ("resume", "--resume")):
        if differs(field) and r[field]:
            flag(name)

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
