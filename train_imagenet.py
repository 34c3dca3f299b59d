#!/usr/bin/env python
"""Train an ε-ResNet (or the plain pre-activation ResNet) on ImageNet (ILSVRC-2012).

Examples:
  python train_imagenet.py --data ~/data/imagenet -d 101 -e 2.0 --gpu 0,1,2,3   # batch 256 over 4 GPUs
  python train_imagenet.py --fake -d 50 --gpu 0 --steps-per-epoch 100           # benchmark the graph
  python train_imagenet.py --dry-run -d 152                                     # print the plan and exit
  python train_imagenet.py --data ~/data/imagenet --aug released --gpu 0,1      # the released code's colour chain
"""
import eps_resnet  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from eps_resnet import cli, guard
from eps_resnet.options import add_option
from eps_resnet.recipes import IMAGENET


def recipe_from_command_line(argv=None):
    """(the recipe the command line asks for, whether it is a dry run)."""
    parser = cli.base_parser(__doc__, IMAGENET, cli.imagenet_network_flags(IMAGENET))
    add_option(parser, "fake_data", False)
    add_option(parser, "image_size", 224)
    add_option(parser, "imagenet_aug", IMAGENET.imagenet_aug)
    args = parser.parse_args(argv)
    recipe = cli.recipe_from_args(IMAGENET, args)
    return recipe, args.dry_run


def main():
    return cli.run_training(*recipe_from_command_line())


def run():
    """The console script (pyproject.toml)."""
    guard.main_guard(main)


if __name__ == "__main__":
    run()
