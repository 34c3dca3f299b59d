"""Command-line plumbing shared by the entry scripts: common flags, GPU selection, dry run, error handling."""
import argparse
from typing import Optional, Tuple
import dataclasses
import os
import sys

from . import UserError
from .plan import Plan
from .options import OPTIONS, add_option
from .recipes import Recipe


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends each option's default, unless the option is required or its help already states it."""

    def _get_help_string(self, action):
        if action.required or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def base_parser(description: str, recipe: Recipe, network_flag) -> argparse.ArgumentParser:
    """The flags every training script shares (names, help and bounds: eps_resnet.options); `network_flag` adds
    -n/--num-units or -d/--depth. Each flag's value lands under its recipe field's name."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    network_flag(p)
    add_option(p, "data_dir", recipe.data_dir)
    e = OPTIONS["epsilon"]
    p.add_argument(*e.names, dest="epsilon", type=epsilon_value, default=recipe.epsilon, metavar=e.metavar, help=e.help)
    add_option(p, "epsilon_tolerance", AUTO_TOLERANCE)
    add_option(p, "holdout", None, help=OPTIONS["holdout"].help + " (default: %d)" % AUTO_HOLDOUT)
    add_option(p, "epsilon_start_epoch", recipe.epsilon_start_epoch)
    p.add_argument("--plain", action="store_true", help="train the plain pre-activation ResNet baseline: no gates, "
                   "standard learning-rate schedule, %d epochs unless --max-epoch" % recipe.plain_max_epoch)
    add_option(p, "channel_penalty", recipe.channel_penalty)
    add_option(p, "channel_variance", recipe.channel_variance)
    add_option(p, "gpus", None)  # a string until recipe_from_args parses it (parse_gpus)
    add_option(p, "trainer", "auto")
    add_option(p, "scale_lr", False)
    add_option(p, "logdir", None)
    add_option(p, "resume", False)
    add_option(p, "load", None)
    add_option(p, "max_epoch", None,
               help="last epoch (default: %d, or %d with --plain)" % (recipe.max_epoch, recipe.plain_max_epoch))
    add_option(p, "steps_per_epoch", recipe.steps_per_epoch)
    add_option(p, "batch", recipe.batch, help="batch size in total" if recipe.batch_is_total else "batch size per GPU")
    add_option(p, "seed", recipe.seed, help=OPTIONS["seed"].help + " (default: %s)" % (
        "%(default)s" if recipe.seed is not None else "none, a new one each run"))
    add_option(p, "side_weight", False, dest="no_side")  # recipe_from_args turns it into weight 0
    add_option(p, "workers", recipe.workers)
    add_option(p, "xla", False)
    add_option(p, "grappler", False)
    add_option(p, "histogram_blocks", recipe.histogram_blocks)
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
        add_option(p, "num_units", recipe.num_units)
        add_option(p, "bottleneck", recipe.bottleneck)
        add_option(p, "width", recipe.width)
    return add


def imagenet_network_flags(recipe: Recipe):
    """-d/--depth, the ImageNet script's network flag."""
    def add(p: argparse.ArgumentParser):
        add_option(p, "depth", recipe.depth)
    return add


def add_checkpoint_data_flags(p: argparse.ArgumentParser):
    """--checkpoint, --data and --calib-batches of the commands that read a trained run (export, frontier)."""
    p.add_argument("--checkpoint", metavar="STEP|PATH", default=None, help="checkpoint to read (default: the newest)")
    p.add_argument("--data", metavar="DIR", default=None, help="dataset directory (default: the run's)")
    p.add_argument("--calib-batches", type=int, default=None, metavar="N",
                   help="use the first N validation batches of 64 (default: the whole split)")


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
    from .tfcompat import gpu_probe_message, visible_gpus
    visible = len(visible_gpus())
    if visible < len(ids):
        said = gpu_probe_message()
        raise UserError("--gpu %s asks for %d GPU(s) but %d are visible%s; check nvidia-smi, or drop --gpu to train "
                        "on the CPU" % (text, len(ids), visible, " (CUDA: %s)" % said if said else ""))
    return tuple(range(len(ids)))  # after CUDA_VISIBLE_DEVICES, TensorFlow numbers them from 0


# Fields whose flag is parsed into a value below; every other flag of the option table stores its field's value.
TURNED_INTO_VALUES = ("epsilon", "epsilon_tolerance", "holdout", "max_epoch", "gpus")


def recipe_from_args(recipe: Recipe, args: argparse.Namespace, **extra) -> Recipe:
    """The recipe with the command line's choices applied (`extra`: script-specific fields)."""
    given = vars(args)
    changes = {field: given[field] for field in OPTIONS if field in given and field not in TURNED_INTO_VALUES}
    auto = args.epsilon == "auto" and not args.plain
    if args.epsilon == "auto" and args.plain:
        raise UserError("--epsilon auto chooses the gates' ε; a --plain run has no gates: drop one of them")
    if args.holdout is not None and not auto:
        raise UserError("--holdout sets aside images for --epsilon auto; drop it, or pass -e auto")
    changes.update(epsilon_tolerance=args.epsilon_tolerance if auto else None,
                   holdout=(args.holdout if args.holdout is not None else AUTO_HOLDOUT) if auto else 0)
    changes.update(epsilon=None if args.plain else 0.0 if auto else args.epsilon,
                   max_epoch=(args.max_epoch if args.max_epoch is not None
                              else recipe.plain_max_epoch if args.plain else recipe.max_epoch))
    if args.no_side:
        changes["side_weight"] = 0.0
    if args.xla and "tensorflow" not in sys.modules:
        # auto-clustering of CPU ops (GPU ops need nothing more); TensorFlow reads the flag when it loads
        flags = os.environ.get("TF_XLA_FLAGS", "")
        if "--tf_xla_cpu_global_jit" not in flags:
            os.environ["TF_XLA_FLAGS"] = (flags + " --tf_xla_cpu_global_jit").strip()
    changes["gpus"] = parse_gpus(args.gpus)
    changes.update(extra)
    recipe = dataclasses.replace(recipe, **changes)
    if not recipe.gpus and recipe.engine != "horovod":
        # no --gpu means the CPU (--help): unhidden, TensorFlow would place the graph on GPU 0 in the CPU's layout
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return recipe


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
    from .methods import training_methods
    for method in training_methods(recipe):
        line = method.report_key in summary and method.trained_line(summary[method.report_key])
        if line:
            lines.append(line)
    print("\n".join(lines))
    return 0
