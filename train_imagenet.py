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
from eps_resnet.data import IMAGENET_AUGS
from eps_resnet.plan import IMAGENET_DEPTHS
from eps_resnet.recipes import IMAGENET


def recipe_from_command_line(argv=None):
    """(the recipe the command line asks for, whether it is a dry run)."""
    def network(p):
        p.add_argument("-d", "--depth", type=int, default=IMAGENET.depth, choices=sorted(IMAGENET_DEPTHS),
                       help="network depth")
    parser = cli.base_parser(__doc__, IMAGENET, network)
    parser.add_argument("--fake", action="store_true", help="synthetic input data, to benchmark the graph")
    parser.add_argument("--image-size", type=int, default=224, help="input size (smaller for quick experiments)")
    parser.add_argument("--aug", choices=IMAGENET_AUGS, default=IMAGENET.imagenet_aug,
                        help="augmentation and input normalisation: intended (RGB, PCA lighting on [0, 255], "
                             "cubic resizes), or released (the released code's chain with its quirks; "
                             "docs/FIDELITY.md)")
    args = parser.parse_args(argv)
    recipe = cli.recipe_from_args(IMAGENET, args, depth=args.depth, fake_data=args.fake, image_size=args.image_size,
                                  imagenet_aug=args.aug, gpus=cli.parse_gpus(args.gpu))
    return recipe, args.dry_run


def main():
    return cli.run_training(*recipe_from_command_line())


def run():
    """The console script (pyproject.toml)."""
    guard.main_guard(main)


if __name__ == "__main__":
    run()
