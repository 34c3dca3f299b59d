"""The paper's training settings (Sec. 4) as data: one frozen training recipe per dataset, every field overridable from the command line.

A recipe says what to train (network, ε, schedules, regularisation) and how to run it (data, devices, log
directory). `dataclasses.replace(recipe, field=value)` gives a variant; `validate()` checks it.
"""
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from . import UserError
from .data import dataset_info, num_classes_in
from .options import OPERATIONAL, OPTIONS, SHAPING, resume_flags
from .plan import Plan, cifar_plan, imagenet_plan
from .distributed import cores_per_process, launched_by_horovodrun

Schedule = Tuple[Tuple[int, float], ...]

CIFAR_STANDARD_LR: Schedule = ((0, 0.1), (82, 0.01), (123, 0.001), (300, 0.0002))
CIFAR_FAST_LR: Schedule = ((0, 0.1), (41, 0.01), (61, 0.001), (150, 0.0002))
SVHN_STANDARD_LR: Schedule = ((1, 0.1), (20, 0.01), (28, 0.001), (50, 0.0001))
SVHN_FAST_LR: Schedule = ((1, 0.1), (10, 0.01), (14, 0.001), (25, 0.0001))
IMAGENET_LR: Schedule = ((0, 0.1), (30, 0.01), (60, 0.001), (85, 1e-4), (95, 1e-5))


@dataclass(frozen=True)
class Recipe:
    dataset: str                          # cifar10, cifar100, svhn, imagenet, digits
    num_units: int = 18                   # blocks per group, CIFAR-style networks (depth 6n+2)
    width: int = 1                        # channel multiplier of CIFAR-style networks (k > 1: WRN-(6n+4)-k)
    bottleneck: bool = False              # CIFAR-style: bottleneck units, depth 9n+2 (ResNet-164, ResNet-1001)
    depth: int = 101                      # ImageNet depth (18, 34, 50, 101, 152)
    epsilon: Optional[float] = 2.5        # None: plain pre-activation ResNet (no gates)
    epsilon_start_epoch: int = 0          # ε is 0 (gates open) until this epoch ends
    epsilon_tolerance: Optional[float] = None  # --epsilon auto: ε chosen at the warm-up's end (auto_epsilon), within
                                               # this many error points; epsilon is then 0.0 until the choice
    holdout: int = 0                      # training images held out of training (--epsilon auto measures on them)
    batch: int = 128                      # per GPU (CIFAR/SVHN/digits) or in total (ImageNet)
    batch_is_total: bool = False
    max_epoch: int = 1000                 # ε-ResNet
    plain_max_epoch: int = 200            # plain baseline
    steps_per_epoch: Optional[int] = None  # None: one pass over the training set
    standard_lr: Schedule = CIFAR_STANDARD_LR
    fast_lr: Schedule = CIFAR_FAST_LR
    adaptive_lr: bool = True
    adaptive_k: int = 1
    adaptive_threshold: float = 1.0
    weight_decay: float = 2e-4
    weight_decay_every: Optional[int] = 480000  # x0.2 every this many steps; None: constant
    nesterov: bool = False
    momentum: float = 0.9                 # SGD momentum (all recipes; recorded in run.json with the rest)
    side_weight: float = 0.1              # 0: no side supervision
    channel_penalty: float = 0.0          # > 0: channel pruning (eps_resnet.channels), the regulariser's weight
    channel_variance: float = 1.0         # its variance-aware term's weight against the cross-layer term
    svhn_jitter: str = "paper"            # SVHN colour jitter: paper, released or none
    mean_from: str = "train"              # CIFAR/SVHN mean image from the training split, or all splits (released)
    imagenet_aug: str = "intended"        # ImageNet augmentation and normalisation: intended or released
    image_size: Optional[int] = None      # None: the dataset's (32 or 224)
    # how to run
    data_dir: Optional[str] = None
    workers: Optional[int] = None         # dataflow processes; None: from the machine (dataflow_workers())
    logdir: Optional[str] = None          # None: train_log/<name>
    gpus: Tuple[int, ...] = ()            # () : CPU
    trainer: str = "auto"                 # auto (Horovod when started by horovodrun), replicated or horovod
    scale_lr: bool = False                # Horovod: multiply the learning rates by the number of processes
    resume: bool = False
    load: Optional[str] = None            # initialise weights from this checkpoint
    fake_data: bool = False               # ImageNet: synthetic input, to benchmark the graph
    max_to_keep: int = 3                  # checkpoints kept
    seed: Optional[int] = None
    xla: bool = False                     # XLA auto-clustering of the training session
    grappler: bool = False                # Grappler's graph rewrites on a CPU too (always on with GPUs)
    histogram_blocks: int = 16            # blocks whose kernels TensorBoard gets histograms of, evenly spaced

    @property
    def plain(self):
        return self.epsilon is None

    @property
    def auto_epsilon(self):
        return self.epsilon_tolerance is not None

    @property
    def batch_per_tower(self) -> int:
        """The batch one tower (GPU, or the CPU) trains on, which the gates decide over; validate() checks that a
        total batch divides over the GPUs."""
        return self.batch // max(1, len(self.gpus)) if self.batch_is_total else self.batch

    @property
    def engine(self):
        """How training runs: "horovod" (one process per GPU; chosen when started by horovodrun unless asked
        otherwise), "replicated" (one process, several --gpu towers) or "single"."""
        if self.trainer == "horovod" or (self.trainer == "auto" and launched_by_horovodrun()):
            return "horovod"
        return "replicated" if len(self.gpus) > 1 else "single"

    def dataflow_workers(self) -> int:
        """--workers, or by default from the cores this process may use: ImageNet decodes JPEGs, min(40, cores/2)
        as in tensorpack's ImageNet example; CIFAR/SVHN augment small arrays, min(4, cores/2)."""
        if self.workers is not None:
            return self.workers
        return max(1, min(dataset_info(self.dataset).max_workers, cores_per_process() // 2))

    @property
    def style(self):
        return dataset_info(self.dataset).style

    def run_name(self):
        net = "resnet%d" % self.depth if self.style == "imagenet" else "n%d" % self.num_units
        if self.style != "imagenet" and self.bottleneck:
            net += "-bottleneck"
        if self.style != "imagenet" and self.width > 1:
            net += "-w%d" % self.width
        variant = "plain" if self.plain else "epsauto" if self.auto_epsilon else "eps%g" % self.epsilon
        if self.channel_penalty > 0:
            variant += "-ch%g" % self.channel_penalty
        return "%s-%s-%s" % (self.dataset, net, variant)

    def resume_conflicts(self, saved: dict):
        """[(flag, the run's value, this recipe's value)] for settings that shape training and differ from the run
        being resumed (its run.json recipe): a resume that changed them would silently train another model."""
        return [(flag, saved_value, value) for flag, saved_value, value in self._differences(saved, _SHAPING)]

    def resume_changes(self, saved: dict):
        """[(flag, the run's value, this recipe's value)] for how-to-run settings that a resume applies."""
        return self._differences(saved, _OPERATIONAL)

    def _differences(self, saved, fields):
        mine = json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, like run.json
        found = []
        for name, flag in fields.items():
            if name in saved and saved[name] != mine[name]:
                show = _show_epsilon if name == "epsilon" else _show
                found.append((flag, show(saved[name]), show(mine[name])))
        return found

    def validate(self):
        for o in OPTIONS.values():  # the bounds and choices of the option table
            value = getattr(self, o.field)
            if isinstance(value, float) and not math.isfinite(value):  # argparse's float() takes "nan" and "inf"
                raise UserError("%s must be a finite number, got %r" % (o.long, value))
            if o.at_least is not None and value is not None and not value >= o.at_least:
                raise UserError("%s must be >= %g%s, got %r" % (o.long, o.at_least, " " + o.why if o.why else "",
                                                                value))
            if o.choices is not None and value not in o.choices:
                raise UserError("%s must be one of %s, got %r" % (o.long, ", ".join(map(str, o.choices)), value))
        if self.auto_epsilon:
            if self.plain:
                raise UserError("--epsilon auto chooses the gates' ε; a --plain run has no gates: drop one of them")
            if self.epsilon_start_epoch < 1:
                raise UserError("--epsilon auto chooses ε at the end of the warm-up; pass --epsilon-start N with N "
                                ">= 1 (the epochs trained with every gate open first)")
            if not self.epsilon_tolerance >= 0:
                raise UserError("--epsilon-tolerance must be >= 0 (error points), got %r" % (self.epsilon_tolerance,))
            if self.holdout < 1:
                raise UserError("--holdout must be >= 1 (training images to choose ε on), got %r" % (self.holdout,))
        elif self.holdout:
            raise UserError("--holdout sets aside images for --epsilon auto; drop it, or pass -e auto")
        if self.channel_penalty == 0 and self.channel_variance != Recipe.channel_variance:
            raise UserError("--channel-variance weighs a term of the channel regulariser, which is off; pass "
                            "--channel-penalty LAMBDA too, or drop --channel-variance")
        for field in ("data_dir", "logdir", "load"):
            value = getattr(self, field)
            if value is not None and not value.strip():
                raise UserError("%s is empty; pass a path, or leave the flag out" % OPTIONS[field].long)
        if self.trainer == "replicated" and launched_by_horovodrun():
            raise UserError("--trainer replicated trains in one process, but horovodrun started several; drop "
                            "--trainer (Horovod is chosen) or start the script without horovodrun")
        if self.trainer == "horovod" and self.gpus:
            raise UserError("under Horovod each process trains on the GPU of its local rank; drop --gpu "
                            "(limit the GPUs with CUDA_VISIBLE_DEVICES and horovodrun -np)")
        if self.scale_lr and self.trainer == "replicated":
            raise UserError("--scale-lr scales by the number of Horovod processes; drop it or use --trainer horovod")
        if self.resume and self.load:
            raise UserError("--resume continues the run in --logdir with its own checkpoint; drop --load")
        if self.batch_is_total and self.gpus and self.batch % len(self.gpus):
            raise UserError("--batch %d (total) does not divide over %d GPUs; use a multiple of %d"
                            % (self.batch, len(self.gpus), len(self.gpus)))
        return self


# What a --resume must not change (the flag that sets it, or the recipe field), and what it may.
_SHAPING = resume_flags(SHAPING)
_OPERATIONAL = resume_flags(OPERATIONAL)


def _show_epsilon(value):
    return "none (--plain)" if value is None else str(value)


def _show(value):
    return "none" if value is None else (",".join(map(str, value)) if isinstance(value, list) else str(value))


# The released CIFAR code kept ε at 0 (a plain ResNet) for 150 epochs, then switched the gates on.
CIFAR10 = Recipe(dataset="cifar10", epsilon_start_epoch=150)
CIFAR100 = dataclasses.replace(CIFAR10, dataset="cifar100")

SVHN = Recipe(dataset="svhn", epsilon=1.5, max_epoch=200, plain_max_epoch=80,
              standard_lr=SVHN_STANDARD_LR, fast_lr=SVHN_FAST_LR)

IMAGENET = Recipe(dataset="imagenet", depth=101, epsilon=2.0, batch=256, batch_is_total=True, max_epoch=110,
                  plain_max_epoch=110, steps_per_epoch=5000, standard_lr=IMAGENET_LR, fast_lr=IMAGENET_LR,
                  adaptive_lr=False, weight_decay=1e-4, weight_decay_every=None, nesterov=True)

# The bundled digits demo (`make demo`; README, "The demo"): ResNet-32 on 16x16 digits, 30 epochs of 100 steps of
# batch 32, about 2 minutes per run on 2 CPU cores, the same for the plain baseline. Shaped like the CIFAR recipe
# (a plain warm-up, then the gates), compressed ~100x in steps, so some settings differ from the paper's:
# - weight decay 4e-3 (paper 2e-4): a shut block's kernels shrink only by weight decay, by about 10 * lr * wd per
#   step at momentum 0.9; halving them takes ~170 steps (1.7 epochs) at lr 0.1 here, ~3,500 steps with 2e-4;
# - ε 5 (paper 2.5): responses here are about 5-15 when the gates switch on; weight decay pulls the responses of
#   the blocks the loss needs less towards a level that falls with it, and a larger ε (6) let that cascade shut
#   every block in some runs;
# - resets: 0.1 for 3 epochs (each newly shut block's kernels fall to about 0.3 of their norm), 0.01 for 2;
# - reset rule k = 3, threshold 0.5 (paper 1, 1): discarded_cnt against its value three epochs earlier, so a
#   block that shuts gradually (open on fewer and fewer batches) also resets the learning rate; in a 100-step
#   epoch the moving average rises by less than one for a block that shuts during it.
DIGITS_DEMO = Recipe(dataset="digits", num_units=5, epsilon=5.0, epsilon_start_epoch=3, batch=32,
                     max_epoch=30, plain_max_epoch=30, steps_per_epoch=100,
                     standard_lr=((0, 0.1), (15, 0.01), (25, 0.001)), fast_lr=((0, 0.1), (3, 0.01), (5, 0.001)),
                     adaptive_k=3, adaptive_threshold=0.5, weight_decay=4e-3, weight_decay_every=None, workers=0,
                     max_to_keep=2, seed=1)

RECIPES = {"cifar10": CIFAR10, "cifar100": CIFAR100, "svhn": SVHN, "imagenet": IMAGENET, "digits": DIGITS_DEMO}


# ---- the network a recipe trains ---------------------------------------------------------------------------
def num_classes_of(recipe: Recipe) -> int:
    return num_classes_in(recipe.dataset, None if recipe.fake_data else recipe.data_dir)


def build_plan(recipe: Recipe, num_classes: Optional[int] = None) -> Plan:
    num_classes = num_classes if num_classes is not None else num_classes_of(recipe)
    size = recipe.image_size if recipe.image_size is not None else dataset_info(recipe.dataset).image_size
    if recipe.style == "imagenet":
        return imagenet_plan(recipe.depth, num_classes=num_classes, image_size=size)
    return cifar_plan(recipe.num_units, num_classes=num_classes, image_size=size, width=recipe.width,
                      bottleneck=recipe.bottleneck)


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(plan: Plan, recipe: Recipe):
    """Refuse, before anything is allocated, a network that cannot train in this machine's memory (on GPUs only
    the weights' host copy is checked: the towers' memory is the GPUs')."""
    batch = recipe.batch_per_tower
    need = plan.training_bytes(batch) if not recipe.gpus else 4 * (plan.num_params + plan.side_params)
    have = machine_memory_bytes()
    if need > have:
        params = plan.num_params
        count = "%.3g G" % (params / 1e9) if params >= 1e9 else "%.3g M" % (params / 1e6)
        raise UserError("%s with %s parameters needs at least %.3g GB to train at batch %d, more than this "
                        "machine's %.1f GB of memory; choose a smaller network (-n, --width, -d) or --batch"
                        % (plan.title, count, need / 1e9, batch, have / 1e9))
