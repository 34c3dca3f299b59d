"""Command-line plumbing shared by the entry scripts: common flags, GPU selection, dry run, error handling."""
import argparse
from typing import Optional, Tuple
import dataclasses
import os
import sys

from . import UserError
from .plan import Plan
from .recipes import TRAINERS, Recipe


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends each option's default, unless the option is required or its help already states it."""

    def _get_help_string(self, action):
        if action.required or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def base_parser(description: str, recipe: Recipe, network_flag) -> argparse.ArgumentParser:
    """The flags every training script shares; `network_flag` adds -n/--num-units or -d/--depth."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    network_flag(p)
    p.add_argument("--data", metavar="DIR", default=recipe.data_dir, help="dataset directory")
    p.add_argument("-e", "--epsilon", type=epsilon_value, default=recipe.epsilon, metavar="EPS|auto",
                   help="ε of the strict-identity gate (paper Sec. 4: CIFAR 2.5, SVHN 1.5, ImageNet 1.8-2.1), or "
                        "auto: chosen when the warm-up (--epsilon-start) ends, on --holdout training images left out "
                        "of training (beyond the paper; README, \"ε chosen during training\")")
    p.add_argument("--epsilon-tolerance", type=float, default=AUTO_TOLERANCE, metavar="PERCENT",
                   help="with -e auto, the largest ε whose gates, switched on, change at most this percentage of the "
                        "held-out predictions (a bound on the error change, in points)")
    p.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="with -e auto, the training images held out of training to choose ε on (default: %d)" % AUTO_HOLDOUT)
    p.add_argument("--epsilon-start", type=int, default=recipe.epsilon_start_epoch, metavar="EPOCH",
                   help="keep ε at 0 (a plain ResNet) until this epoch ends")
    p.add_argument("--plain", action="store_true", help="train the plain pre-activation ResNet baseline: no gates, "
                   "standard learning-rate schedule, %d epochs unless --max-epoch" % recipe.plain_max_epoch)
    p.add_argument("--channel-penalty", type=float, default=recipe.channel_penalty, metavar="LAMBDA",
                   help="channel pruning after VACL (beyond the paper; README, \"Channels\"): this weight times the "
                        "cross-layer group norms of the channels skip connections tie together, plus their "
                        "variance-aware term; 0: off (default: %(default)s)")
    p.add_argument("--channel-variance", type=float, default=recipe.channel_variance, metavar="W",
                   help="with --channel-penalty, the weight of the variance-aware term (the spread of a channel's "
                        "norms over the layers it connects) against the group norms (default: %(default)s)")
    p.add_argument("--gpu", metavar="IDS", default=None,
                   help="comma-separated GPU ids, e.g. 0,1 (several: synchronous multi-GPU training); none: CPU")
    p.add_argument("--trainer", choices=TRAINERS, default="auto",
                   help="multi-GPU engine: replicated (one process, --gpu), or horovod (one process per GPU, several "
                   "machines: start with horovodrun); auto picks horovod when started by horovodrun")
    p.add_argument("--scale-lr", action="store_true",
                   help="Horovod: multiply the learning rates by the number of processes (linear scaling rule)")
    p.add_argument("--logdir", metavar="DIR", default=None,
                   help="log directory of the run (default: train_log/<dataset>-<network>-<variant>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --logdir from its last checkpoint")
    p.add_argument("--load", metavar="CKPT", default=None,
                   help="initialise the weights from this checkpoint (model-N prefix, .index file or log dir)")
    p.add_argument("--max-epoch", type=int, default=None,
                   help="last epoch (default: %d, or %d with --plain)" % (recipe.max_epoch, recipe.plain_max_epoch))
    p.add_argument("--steps-per-epoch", type=int, default=recipe.steps_per_epoch,
                   help="steps per epoch (default: one pass over the training set)")
    p.add_argument("--batch", type=int, default=recipe.batch,
                   help="batch size in total" if recipe.batch_is_total else "batch size per GPU")
    p.add_argument("--seed", type=int, default=recipe.seed,
                   help="seed of the weights' initialisation, the data order and the augmentation; with --workers 0 "
                        "a run is repeatable (default: %s)" % ("%(default)s" if recipe.seed is not None else "none, a new one each run"))
    p.add_argument("--no-side", action="store_true", help="switch off the side supervision (weight 0.1) mid-network")
    p.add_argument("--workers", type=int, default=recipe.workers,
                   help="dataflow worker processes; none: from the cores, min(40, cores/2) for ImageNet, "
                        "min(4, cores/2) for CIFAR/SVHN; 0: load in the training process")
    p.add_argument("--xla", action="store_true",
                   help="compile the training graph with XLA auto-clustering (fuses each gate on GPUs)")
    p.add_argument("--grappler", action="store_true",
                   help="run TensorFlow's graph rewrites (Grappler) on a CPU too, as on GPUs: steps 6-20%% faster at "
                        "batch 32, no faster at 128; start-up longer (ResNet-362: +35 s; README, Benchmarks)")
    p.add_argument("--histogram-blocks", type=int, default=recipe.histogram_blocks, metavar="N",
                   help="TensorBoard histograms of the kernels of N blocks evenly spaced along the depth, besides the "
                        "stem and heads (default: %(default)s; 0: none; every block of ResNet-752 would be ~2.1 MB an epoch)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the network plan (blocks per group, parameters, FLOPs) and exit")
    return p


AUTO_TOLERANCE = 2.0  # percent of held-out predictions; on the digits none change below a knee, 5-60% beyond it
AUTO_HOLDOUT = 256    # images: a tolerance of 2% is 5 of them


def epsilon_value(text: str):
    """-e's value: a number, or "auto"."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is neither a number nor auto" % text)


def cifar_network_flags(recipe: Recipe):
    """The network flags of the CIFAR-style scripts (CIFAR, SVHN, the digits): -n/--num-units, --bottleneck and
    --width."""
    def add(p: argparse.ArgumentParser):
        p.add_argument("-n", "--num-units", type=int, default=recipe.num_units,
                       help="blocks per group: depth 6n+2 (ResNet-110: 18, the 752-layer network: 125), with "
                            "--bottleneck 9n+2 (ResNet-164: 18, ResNet-1001: 111)")
        p.add_argument("--bottleneck", action="store_true", default=recipe.bottleneck,
                       help="the pre-activation paper's bottleneck units (1x1, 3x3, 1x1; 64, 128, 256 channels), "
                            "every unit gated (default: %(default)s, basic blocks)")
        p.add_argument("--width", type=int, default=recipe.width, metavar="K",
                       help="channel multiplier: K > 1 gives the wide residual network WRN-(6n+4)-K, every block "
                            "gated (WRN-28-10: -n 4 --width 10, 36.5 M parameters), with 1x1 convolution shortcuts "
                            "where the channel count changes")
    return add


def add_checkpoint_data_flags(p: argparse.ArgumentParser):
    """--checkpoint, --data and --calib-batches of the commands that read a trained run (export, frontier)."""
    p.add_argument("--checkpoint", metavar="STEP|PATH", default=None, help="checkpoint to read (default: the newest)")
    p.add_argument("--data", metavar="DIR", default=None, help="dataset directory (default: the run's)")
    p.add_argument("--calib-batches", type=int, default=None, metavar="N",
                   help="use the first N validation batches of 64 (default: the whole split)")


def add_mean_from_flag(p: argparse.ArgumentParser, recipe: Recipe):
    from .data import MEAN_FROM
    p.add_argument("--mean-from", choices=MEAN_FROM, default=recipe.mean_from,
                   help="images the subtracted mean image is computed from: the training split, or all splits "
                        "including the test split (the released code; docs/FIDELITY.md)")


def parse_gpus(text: Optional[str]) -> Tuple[int, ...]:
    """'0,1' -> (0, 1); selects those GPUs for TensorFlow and checks that they exist."""
    if text is None or text.strip() == "":
        return ()
    try:
        ids = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise UserError("--gpu %r is not a comma-separated list of GPU ids like 0,1" % text)
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise UserError("--gpu %r: ids must be distinct and >= 0" % text)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    from .tfcompat import tf
    visible = len(tf.config.list_physical_devices("GPU"))
    if visible < len(ids):
        raise UserError("--gpu %s asks for %d GPU(s) but %d are visible; check nvidia-smi, or drop --gpu to train "
                        "on the CPU" % (text, len(ids), visible))
    return tuple(range(len(ids)))  # after CUDA_VISIBLE_DEVICES, TensorFlow numbers them from 0


def recipe_from_args(recipe: Recipe, args: argparse.Namespace, **extra) -> Recipe:
    """The recipe with the command line's choices applied (`extra`: script-specific fields)."""
    changes = {k: v for k, v in (("data_dir", args.data), ("logdir", args.logdir), ("load", args.load),
                                 ("steps_per_epoch", args.steps_per_epoch)) if v is not None}
    changes.update(seed=args.seed, trainer=args.trainer, scale_lr=args.scale_lr, xla=args.xla, grappler=args.grappler,
                   histogram_blocks=args.histogram_blocks, channel_penalty=args.channel_penalty,
                   channel_variance=args.channel_variance)
    auto = args.epsilon == "auto" and not args.plain
    if args.epsilon == "auto" and args.plain:
        raise UserError("--epsilon auto chooses the gates' ε; a --plain run has no gates: drop one of them")
    if args.holdout is not None and not auto:
        raise UserError("--holdout sets aside images for --epsilon auto; drop it, or pass -e auto")
    changes.update(epsilon_tolerance=args.epsilon_tolerance if auto else None,
                   holdout=(args.holdout if args.holdout is not None else AUTO_HOLDOUT) if auto else 0)
    changes.update(epsilon=None if args.plain else 0.0 if auto else args.epsilon, epsilon_start_epoch=args.epsilon_start,
                   resume=args.resume, batch=args.batch, workers=args.workers,
                   max_epoch=(args.max_epoch if args.max_epoch is not None
                              else recipe.plain_max_epoch if args.plain else recipe.max_epoch))
    if args.no_side:
        changes["side_weight"] = 0.0
    if getattr(args, "num_units", None) is not None:  # the CIFAR-style scripts (cifar_network_flags)
        changes.update(num_units=args.num_units, width=args.width, bottleneck=args.bottleneck)
    if args.xla and "tensorflow" not in sys.modules:
        # auto-clustering of CPU ops (GPU ops need nothing more); TensorFlow reads the flag when it loads
        flags = os.environ.get("TF_XLA_FLAGS", "")
        if "--tf_xla_cpu_global_jit" not in flags:
            os.environ["TF_XLA_FLAGS"] = (flags + " --tf_xla_cpu_global_jit").strip()
    changes.update(extra)
    return dataclasses.replace(recipe, **changes)


def plan_table(plan: Plan, gated: bool) -> str:
    from tabulate import tabulate
    rows = []
    for g in plan.groups:
        blocks = plan.blocks_in_group(g)
        rows.append(["group %d" % g, len(blocks), len(blocks) if gated else 0,
                     "%d -> %d" % (blocks[0].in_channels, blocks[-1].out_channels),
                     "%d" % blocks[-1].out_size, "%.3f M" % (sum(b.num_params for b in blocks) / 1e6),
                     "%.3f G" % (sum(b.flops for b in blocks) / 1e9)])
    rows.append(["total", len(plan.blocks), len(plan.blocks) if gated else 0, "", "",
                 "%.3f M" % (plan.num_params / 1e6), "%.3f G" % (plan.flops / 1e9)])
    table = tabulate(rows, headers=["", "blocks", "gated", "channels", "map", "parameters", "FLOPs (MAC)"])
    head = ("%s (%s style), %d weight layers, %d gated blocks, %.2f M parameters (+%d side-head parameters in "
            "training), %.3f G multiply-accumulates per image"
            % (plan.title, plan.style, plan.full_depth, len(plan.blocks) if gated else 0, plan.num_params / 1e6,
               plan.side_params, plan.flops / 1e9))
    return head + "\n" + table


def run_training(recipe: Recipe, dry_run: bool = False) -> int:
    """--dry-run: print the plan; otherwise train and print the outcome."""
    from .data import dataset_info, require_data_dir
    from .recipes import build_plan, check_fits_in_memory
    recipe = recipe.validate()
    plan = build_plan(recipe)
    if dry_run:
        print(plan_table(plan, gated=not recipe.plain))
        return 0
    check_fits_in_memory(plan, recipe)
    if not recipe.fake_data and dataset_info(recipe.dataset).needs_data_dir:
        if not recipe.data_dir:
            raise UserError("no dataset directory given; pass --data DIR (the folder that holds the %s files)"
                            % recipe.dataset)
        require_data_dir(recipe.data_dir, recipe.dataset)
    from .training import train  # TensorFlow loads here: a dry run or a bad flag answers at once
    summary = train(recipe)
    if "rank" in summary:  # a Horovod rank other than 0: rank 0 prints the outcome
        print("rank %d finished; rank 0 wrote the run to %s" % (summary["rank"], summary["logdir"]))
        return 0
    lines = ["run finished: %s" % summary["logdir"]]
    if "val_error_reduced" in summary:
        lines.append("validation error %.2f%% of the reduced network (what an export keeps, with training's "
                     "BatchNorm statistics); %.2f%% of the gated network as training runs it (gates decided per "
                     "batch)" % (100 * summary["val_error_reduced"], 100 * summary["val_error"]))
    elif "val_error" in summary:
        lines.append("validation error %.2f%% (accuracy %.2f%%)" % (100 * summary["val_error"],
                                                                   100 * (1 - summary["val_error"])))
    if "epsilon_chosen" in summary:
        lines.append("ε %.4g, chosen when the warm-up ended (its evidence: %s)"
                     % (summary["epsilon_chosen"], os.path.join(summary["logdir"], "epsilon.json")))
    if "discarded" in summary:
        lines.append("discarded blocks: %d of %d%s" % (len(summary["discarded"]), summary["gated_blocks"],
                                                       (": " + ", ".join(summary["discarded"])) if summary["discarded"] else ""))
    if "channels" in summary:
        c = summary["channels"]
        lines.append("channel slots below norm %g: %d of %d (prune_export.py removes them; --channel-threshold "
                     "sets another norm)" % (c["threshold"], c["below_threshold"], c["slots"]))
    print("\n".join(lines))
    return 0
