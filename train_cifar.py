#!/usr/bin/env python
"""Train an ε-ResNet (or the plain pre-activation ResNet) on CIFAR-10/100, or on the bundled digits with --demo.

Examples:
  python train_cifar.py --data ~/data/cifar -n 18 -e 2.5 --gpu 0      # ResNet-110, ε 2.5 (paper Sec. 4)
  python train_cifar.py --data ~/data/cifar --cifar100 -n 125 --gpu 0,1
  python train_cifar.py --data ~/data/cifar --plain -n 18             # baseline, 200 epochs
  python train_cifar.py --demo                                         # bundled digits, a few minutes on CPU
  python train_cifar.py --dry-run -n 125                               # print the 752-layer plan and exit
  python train_cifar.py --data ~/data/cifar -n 4 --width 10 -e 2.5     # wide ResNet WRN-28-10, gated
"""
import argparse

import eps_resnet  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from eps_resnet import UserError, cli, guard
from eps_resnet.options import add_option
from eps_resnet.recipes import CIFAR10, CIFAR100, DIGITS_DEMO


def recipe_from_command_line(argv=None):
    """(the recipe the command line asks for, whether it is a dry run)."""
    # --demo and --cifar100 choose the recipe, whose values are the defaults of every other flag
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--demo", action="store_true")
    pre.add_argument("--cifar100", action="store_true")
    chosen, _ = pre.parse_known_args(argv)
    if chosen.demo and chosen.cifar100:
        raise UserError("--demo trains on the bundled digits; drop --cifar100")
    base = DIGITS_DEMO if chosen.demo else (CIFAR100 if chosen.cifar100 else CIFAR10)

    parser = cli.base_parser(__doc__, base, cli.cifar_network_flags(base))
    parser.add_argument("--cifar100", action="store_true", help="CIFAR-100 instead of CIFAR-10")
    parser.add_argument("--demo", action="store_true",
                        help="train on scikit-learn's bundled handwritten digits (no download) with demo settings")
    add_option(parser, "mean_from", base.mean_from)
    args = parser.parse_args(argv)
    recipe = cli.recipe_from_args(base, args)
    return recipe, args.dry_run


def main():
    return cli.run_training(*recipe_from_command_line())


def run():
    """The console script (pyproject.toml)."""
    guard.main_guard(main)


if __name__ == "__main__":
    run()
