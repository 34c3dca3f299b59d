"""Every recipe field a run records, defined once: the flag that sets it (if any), its help, its bounds, and whether
a --resume may change it. The training scripts' parsers (cli.py), Recipe.validate and the resume check
(recipes.py), and the commands printed for the user to run (commands.py) all read this table.

Options whose parsing is special (-e takes "auto", --plain and --no-side set other fields, --gpu selects devices,
--max-epoch's default follows --plain) are added to the parser by hand in cli.py, with their names and help from
here.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .data import IMAGENET_AUGS, MEAN_FROM, SVHN_JITTERS
from .plan import IMAGENET_DEPTHS

SHAPING = "shaping"          # a --resume must not change it: it would silently train another model
OPERATIONAL = "operational"  # how to run: a --resume may change it (and says so)
NEITHER = "neither"          # where the run is, what it starts from: not compared on --resume

TRAINERS = ("auto", "replicated", "horovod")


@dataclass(frozen=True)
class Option:
    field: str                             # the Recipe field
    names: Tuple[str, ...] = ()            # its flag as argparse takes it; () : set by the recipe only
    help: str = ""
    resume: str = SHAPING
    type: Optional[type] = None            # None with names: a switch (store_true)
    metavar: Optional[str] = None
    choices: Optional[Tuple] = None
    at_least: Optional[float] = None       # validate(): the smallest value allowed (None passes: "the default")
    why: str = ""                          # validate(): said after the bound, e.g. "(0: none)"
    label: str = ""                        # how messages name a setting no flag sets (default: the field)

    @property
    def flag(self) -> str:
        """How messages name it: '-n/--num-units', or the label of a setting no flag sets."""
        return "/".join(self.names) if self.names else (self.label or self.field)

    @property
    def long(self) -> str:
        return self.names[-1]


def _options(*options: Option) -> Dict[str, Option]:
    return {o.field: o for o in options}


OPTIONS = _options(
    # what to train
    Option("dataset", label="the data set (script, --cifar100 or --demo)"),
    Option("num_units", ("-n", "--num-units"), type=int, at_least=1,
           help="blocks per group: depth 6n+2 (ResNet-110: 18, the 752-layer network: 125), with --bottleneck 9n+2 "
                "(ResNet-164: 18, ResNet-1001: 111)"),
    Option("bottleneck", ("--bottleneck",),
           help="the pre-activation paper's bottleneck units (1x1, 3x3, 1x1; 64, 128, 256 channels), every unit gated "
                "(default: %(default)s, basic blocks)"),
    Option("width", ("--width",), type=int, metavar="K", at_least=1,
           help="channel multiplier: K > 1 gives the wide residual network WRN-(6n+4)-K, every block gated (WRN-28-10: "
                "-n 4 --width 10, 36.5 M parameters), with 1x1 convolution shortcuts where the channel count changes"),
    Option("depth", ("-d", "--depth"), type=int, choices=tuple(sorted(IMAGENET_DEPTHS)), help="network depth"),
    Option("epsilon", ("-e", "--epsilon"), metavar="EPS|auto", at_least=0,
           help="ε of the strict-identity gate (paper Sec. 4: CIFAR 2.5, SVHN 1.5, ImageNet 1.8-2.1), or auto: chosen "
                "when the warm-up (--epsilon-start) ends, on --holdout training images left out of training (beyond "
                "the paper; README, \"ε chosen during training\")"),
    Option("epsilon_start_epoch", ("--epsilon-start",), type=int, metavar="EPOCH", at_least=0,
           why="(the epoch after which the gates switch on)",
           help="keep ε at 0 (a plain ResNet) until this epoch ends"),
    Option("epsilon_tolerance", ("--epsilon-tolerance",), type=float, metavar="PERCENT",
           help="with -e auto, the largest ε whose gates, switched on, change at most this percentage of the "
                "held-out predictions (a bound on the error change, in points)"),
    Option("holdout", ("--holdout",), type=int, metavar="N",
           help="with -e auto, the training images held out of training to choose ε on"),
    Option("batch", ("--batch",), type=int, at_least=1),
    Option("batch_is_total"),
    Option("steps_per_epoch", ("--steps-per-epoch",), type=int, at_least=1,
           help="steps per epoch (default: one pass over the training set)"),
    Option("side_weight", ("--no-side",), help="switch off the side supervision (weight 0.1) mid-network"),
    Option("svhn_jitter", ("--jitter",), type=str, choices=SVHN_JITTERS,
           help="augmentation: paper (40x40 paste, the paper's colour jitter, 32x32 crop), released (the released "
                "code's chain, with its Gaussian deformation), none (pad and crop only)"),
    Option("image_size", ("--image-size",), type=int, at_least=32, why="(the network halves it five times)",
           help="input size (smaller for quick experiments)"),
    Option("mean_from", ("--mean-from",), type=str, choices=MEAN_FROM,
           help="images the subtracted mean image is computed from: the training split, or all splits including "
                "the test split (the released code; docs/FIDELITY.md)"),
    Option("imagenet_aug", ("--aug",), type=str, choices=IMAGENET_AUGS,
           help="augmentation and input normalisation: intended (RGB, PCA lighting on [0, 255], cubic resizes), or "
                "released (the released code's chain with its quirks; docs/FIDELITY.md)"),
    Option("fake_data", ("--fake",), help="synthetic input data, to benchmark the graph"),
    Option("scale_lr", ("--scale-lr",),
           help="Horovod: multiply the learning rates by the number of processes (linear scaling rule)"),
    Option("standard_lr"), Option("fast_lr"), Option("adaptive_lr"), Option("adaptive_k"),
    Option("adaptive_threshold"), Option("weight_decay"), Option("weight_decay_every"), Option("nesterov"),
    Option("momentum"),
    Option("seed", ("--seed",), type=int,
           help="seed of the weights' initialisation, the data order and the augmentation; with --workers 0 a run "
                "is repeatable"),
    Option("channel_penalty", ("--channel-penalty",), type=float, metavar="LAMBDA", at_least=0,
           help="channel pruning after VACL (beyond the paper; README, \"Channels\"): this weight times the "
                "cross-layer group norms of the channels skip connections tie together, plus their variance-aware "
                "term; 0: off (default: %(default)s)"),
    Option("channel_variance", ("--channel-variance",), type=float, metavar="W", at_least=0,
           help="with --channel-penalty, the weight of the variance-aware term (the spread of a channel's norms over "
                "the layers it connects) against the group norms (default: %(default)s)"),
    Option("plain_max_epoch", resume=NEITHER),
    # how to run
    Option("max_epoch", ("--max-epoch",), resume=OPERATIONAL, type=int, at_least=1),
    Option("data_dir", ("--data",), resume=OPERATIONAL, type=str, metavar="DIR", help="dataset directory"),
    Option("workers", ("--workers",), resume=OPERATIONAL, type=int, at_least=0,
           why="(0: load data in the training process)",
           help="dataflow worker processes; none: from the cores, min(40, cores/2) for ImageNet, min(4, cores/2) for "
                "CIFAR/SVHN; 0: load in the training process"),
    Option("gpus", ("--gpu",), resume=OPERATIONAL, type=str, metavar="IDS",
           help="comma-separated GPU ids, e.g. 0,1 (several: synchronous multi-GPU training); none: the CPU, "
                "GPUs hidden (a Horovod rank: its local GPU)"),
    Option("trainer", ("--trainer",), resume=OPERATIONAL, type=str, choices=TRAINERS,
           help="multi-GPU engine: replicated (one process, --gpu), or horovod (one process per GPU, several "
                "machines: start with horovodrun); auto picks horovod when started by horovodrun"),
    Option("max_to_keep", resume=OPERATIONAL),
    Option("xla", ("--xla",), resume=OPERATIONAL,
           help="compile the training graph with XLA auto-clustering (fuses each gate on GPUs)"),
    Option("grappler", ("--grappler",), resume=OPERATIONAL,
           help="run TensorFlow's graph rewrites (Grappler) on a CPU too, as on GPUs: steps 6-20%% faster at batch "
                "32, no faster at 128; start-up longer (ResNet-362: +35 s; README, Benchmarks)"),
    Option("histogram_blocks", ("--histogram-blocks",), resume=OPERATIONAL, type=int, metavar="N", at_least=0,
           why="(0: none)",
           help="TensorBoard histograms of the kernels of N blocks evenly spaced along the depth, besides the stem "
                "and heads (default: %(default)s; 0: none; every block of ResNet-752 would be ~2.1 MB an epoch)"),
    Option("logdir", ("--logdir",), resume=NEITHER, type=str, metavar="DIR",
           help="log directory of the run (default: train_log/<dataset>-<network>-<variant>)"),
    Option("resume", ("--resume",), resume=NEITHER, help="continue the run in --logdir from its last checkpoint"),
    Option("load", ("--load",), resume=NEITHER, type=str, metavar="CKPT",
           help="initialise the weights from this checkpoint (model-N prefix, .index file or log dir)"),
)


def add_option(parser, field: str, default, **overrides):
    """`field`'s flag on `parser` (an argparse parser), its value stored under the field's name."""
    o = OPTIONS[field]
    spec = dict(dest=field, default=default, help=o.help)
    if o.type is None:
        spec["action"] = "store_true"
    else:
        spec.update(type=o.type, metavar=o.metavar, choices=o.choices)
        if o.choices:
            spec.pop("metavar")
    spec.update(overrides)
    parser.add_argument(*o.names, **spec)


def resume_flags(kind: str) -> Dict[str, str]:
    """{field: how messages name it} of the fields of that resume `kind`."""
    return {o.field: o.flag for o in OPTIONS.values() if o.resume == kind}
