#!/usr/bin/env python
"""Train an ε-ResNet (or the plain pre-activation ResNet) on SVHN (train + extra; evaluated on test).

Examples:
  python train_svhn.py --data ~/data/svhn -n 18 -e 1.5 --gpu 0        # ResNet-110, ε 1.5 (paper Sec. 4)
  python train_svhn.py --data ~/data/svhn --plain -n 18               # baseline, 80 epochs
  python train_svhn.py --data ~/data/svhn --jitter released --mean-from all   # the released code's data pipeline
"""
import eps_resnet  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from eps_resnet import cli, guard
from eps_resnet.options import add_option
from eps_resnet.recipes import SVHN


def recipe_from_command_line(argv=None):
    """(the recipe the command line asks for, whether it is a dry run)."""
    parser = cli.base_parser(__doc__, SVHN, cli.cifar_network_flags(SVHN))
    add_option(parser, "svhn_jitter", SVHN.svhn_jitter)
    add_option(parser, "mean_from", SVHN.mean_from)
    args = parser.parse_args(argv)
    recipe = cli.recipe_from_args(SVHN, args)
    return recipe, args.dry_run


def main():
    return cli.run_training(*recipe_from_command_line())


def run():
    """The console script (pyproject.toml)."""
    guard.main_guard(main)


if __name__ == "__main__":
    run()
