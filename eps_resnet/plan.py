"""The block plan: one description of a network's structure, shared by training, pruning and export.

Pure Python (no TensorFlow). A plan is an ordered tuple of residual blocks plus the stem and head
settings. The model builds its graph from it, the pruner removes residual branches from it, the
report counts parameters and FLOPs with it, and it is written as JSON next to every run and export.

FLOPs are counted as multiply-accumulates of convolutions and fully connected layers, the convention
of He et al. (ResNet-50 ≈ 4.1 G at 224×224).
"""
import dataclasses
import json
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from . import UserError
from .fileio import atomic_write_text

CIFAR_STYLE = "cifar"
IMAGENET_STYLE = "imagenet"

# ImageNet depths: (block kind, blocks per group)
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),  # the pre-activation paper's (fb.resnet.torch's preresnet.lua)
}

# How a block's input reaches its two branches.
PREACT_NONE = "none"          # first block of the network: the stem already ended in BN+ReLU
PREACT_RESIDUAL = "residual"  # shortcut takes x, residual branch takes BNReLU(x)
PREACT_BOTH = "both"          # ImageNet first block of groups 1..3: BNReLU(x) feeds both branches

SHORTCUT_IDENTITY = "identity"
SHORTCUT_POOL_PAD = "pool_pad"  # CIFAR: 2x2 average pool, zero-pad channels (no parameters)
SHORTCUT_CONV = "conv"          # ImageNet: 1x1 convolution with the block's stride


@dataclass(frozen=True)
class Block:
    name: str            # variable scope: res{g}.{k} (CIFAR) or group{g}/block{k} (ImageNet)
    group: int
    index: int           # position inside its group
    kind: str            # "basic" or "bottleneck"
    in_channels: int
    mid_channels: int    # width of the inner convolutions
    out_channels: int
    stride: int
    in_size: int         # spatial size of the block's input (square)
    preact: str
    shortcut: str
    residual: bool = True  # False once the block was discarded
    # Set only by Plan.reduce (channel pruning); None means the unreduced network's value.
    mid2_channels: Optional[int] = None  # a bottleneck's second inner convolution, when it differs from the first
    pad_before: Optional[int] = None     # pool_pad: zero channels before the input's (None: half the padding)
    strided_conv: Optional[int] = None   # which residual convolution strides (None: conv1 of a basic block, the
    #                                      3x3 conv2 of a bottleneck; the CIFAR bottleneck units stride their first 1x1)

    @property
    def inner_channels(self) -> Tuple[int, ...]:
        """Output widths of the residual branch's inner convolutions: (conv1,) or, for a bottleneck, (conv1, conv2)."""
        if self.kind == "basic":
            return (self.mid_channels,)
        return (self.mid_channels, self.mid_channels if self.mid2_channels is None else self.mid2_channels)

    @property
    def stride_at(self) -> int:
        """The residual convolution (1, 2, ...) that carries the block's stride."""
        if self.strided_conv is not None:
            return self.strided_conv
        return 1 if self.kind == "basic" else 2

    @property
    def padding(self) -> Tuple[int, int]:
        """pool_pad: the zero channels added (before, after) the pooled input."""
        total = self.out_channels - self.in_channels
        before = total // 2 if self.pad_before is None else self.pad_before
        return before, total - before

    @property
    def out_size(self) -> int:
        return -(-self.in_size // self.stride)

    def _bn(self, channels):
        return 2 * channels  # gamma and beta are the trainable BatchNorm parameters

    @property
    def shortcut_params(self) -> int:
        """Parameters on the path that survives removal of the residual branch."""
        n = 0
        if self.preact == PREACT_BOTH:
            n += self._bn(self.in_channels)
        if self.shortcut == SHORTCUT_CONV:
            n += self.in_channels * self.out_channels
        return n

    @property
    def residual_params(self) -> int:
        n = self._bn(self.in_channels) if self.preact == PREACT_RESIDUAL else 0
        if self.kind == "basic":
            (m,) = self.inner_channels
            n += 9 * self.in_channels * m + self._bn(m)
            n += 9 * m * self.out_channels
        else:
            m1, m2 = self.inner_channels
            n += self.in_channels * m1 + self._bn(m1)
            n += 9 * m1 * m2 + self._bn(m2)
            n += m2 * self.out_channels
        return n

    @property
    def num_params(self) -> int:
        return self.shortcut_params + (self.residual_params if self.residual else 0)

    @property
    def shortcut_flops(self) -> int:
        if self.shortcut == SHORTCUT_CONV:
            return self.out_size ** 2 * self.in_channels * self.out_channels
        return 0

    @property
    def residual_flops(self) -> int:
        s_in, s_out = self.in_size, self.out_size
        if self.kind == "basic":
            (m,) = self.inner_channels
            return s_out ** 2 * 9 * (self.in_channels * m + m * self.out_channels)
        m1, m2 = self.inner_channels
        first = s_out if self.stride_at == 1 else s_in  # a strided first 1x1 convolution runs at the output size
        return first ** 2 * self.in_channels * m1 + s_out ** 2 * 9 * m1 * m2 + s_out ** 2 * m2 * self.out_channels

    @property
    def flops(self) -> int:
        return self.shortcut_flops + (self.residual_flops if self.residual else 0)

    @property
    def activation_floats(self) -> int:
        """Floats per image that training keeps for the backward pass, roughly: the input and output of each
        BatchNorm-ReLU and each convolution of the block (a measured ResNet-32 step keeps about this many)."""
        s_in, s_out = self.in_size, self.out_size
        inner = 3 * s_out ** 2 * sum(self.inner_channels)
        return 3 * s_in ** 2 * self.in_channels + inner + 2 * s_out ** 2 * self.out_channels

    @property
    def num_layers(self) -> int:
        """Weight layers on the residual branch (what the paper counts as depth)."""
        return 2 if self.kind == "basic" else 3

    @property
    def residual_kernels(self) -> List[str]:
        """Variable names of the residual branch's convolution kernels (empty once discarded)."""
        if not self.residual:
            return []
        return ["%s/conv%d/W" % (self.name, k) for k in range(1, self.num_layers + 1)]


@dataclass(frozen=True)
class Plan:
    style: str                    # CIFAR_STYLE or IMAGENET_STYLE
    num_classes: int
    image_size: int
    stem_channels: int
    blocks: Tuple[Block, ...]
    side_block: Optional[str]     # side supervision attaches after this block

    # ---- structure --------------------------------------------------------------------------
    @property
    def block_names(self) -> List[str]:
        return [b.name for b in self.blocks]

    @property
    def groups(self) -> List[int]:
        return sorted({b.group for b in self.blocks})

    def block(self, name) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise UserError("unknown block %r; this plan has blocks %s ... %s"
                        % (name, self.blocks[0].name, self.blocks[-1].name))

    def blocks_in_group(self, group: int, kept_only: bool = False) -> List[Block]:
        return [b for b in self.blocks if b.group == group and (b.residual or not kept_only)]

    @property
    def kept_blocks(self) -> List[Block]:
        """Blocks with a residual branch: the gated blocks of a trained plan, the kept ones of a reduced plan."""
        return [b for b in self.blocks if b.residual]

    @property
    def block_names_gated(self) -> List[str]:
        return [b.name for b in self.kept_blocks]

    # the per-block scalars training writes (gate.average_gate_statistics, the model's mean|F|), each a tag folder
    PER_BLOCK_SCALARS = ("is_discarded", "batch_response_max", "response_mean")

    def block_tags(self, quantity: str) -> Dict[str, str]:
        """{block: its TensorBoard and stats.json tag for `quantity`}, e.g. `is_discarded/007_res1.7`: one folder per
        quantity (not one per block), and the zero-padded position sorts the blocks in network order at any depth
        (as text, res1.10 would come before res1.2)."""
        digits = len(str(len(self.blocks) - 1))
        return {b.name: "%s/%0*d_%s" % (quantity, digits, i, b.name) for i, b in enumerate(self.blocks)}

    def evenly_spaced_blocks(self, count: int) -> List[Block]:
        """`count` of the blocks with a residual branch, evenly spaced from the first to the last (all if fewer)."""
        kept = self.kept_blocks
        if count >= len(kept):
            return kept
        if count <= 1:
            return kept[:count]
        return [kept[round(i * (len(kept) - 1) / (count - 1))] for i in range(count)]

    @property
    def discarded_blocks(self) -> List[Block]:
        return [b for b in self.blocks if not b.residual]

    @property
    def depth(self) -> int:
        """Weight layers: stem conv + residual branch layers of kept blocks + classifier (6n+2 for CIFAR)."""
        return 2 + sum(b.num_layers for b in self.kept_blocks)

    @property
    def full_depth(self) -> int:
        return 2 + sum(b.num_layers for b in self.blocks)

    @property
    def width(self) -> int:
        """Channel multiplier of a CIFAR-style network (1: the paper's ResNet; k > 1: WRN-(6n+4)-k)."""
        return self.blocks[0].mid_channels // 16 if self.style == CIFAR_STYLE else 1

    @property
    def bottleneck(self) -> bool:
        return self.blocks[0].kind == "bottleneck"

    @property
    def title(self) -> str:
        """ResNet-110, ResNet-164, ResNet-101, or WRN-28-10 (WRN depths count the conv shortcuts, as their paper
        does); a widened bottleneck network: ResNet-164-w2."""
        if self.width > 1:
            if self.bottleneck:
                return "ResNet-%d-w%d" % (self.full_depth, self.width)
            return "WRN-%d-%d" % (self.full_depth + 2, self.width)
        return "ResNet-%d" % self.full_depth

    @property
    def head_channels(self) -> int:
        return self.blocks[-1].out_channels

    @property
    def side_channels(self) -> Optional[int]:
        return self.block(self.side_block).out_channels if self.side_block else None

    # ---- counts -----------------------------------------------------------------------------
    @property
    def stem_params(self) -> int:
        k = 3 if self.style == CIFAR_STYLE else 7
        return k * k * 3 * self.stem_channels + 2 * self.stem_channels

    @property
    def head_params(self) -> int:
        c = self.head_channels
        return 2 * c + c * self.num_classes + self.num_classes

    @property
    def side_params(self) -> int:
        """Trainable parameters of the side-supervision head (training only, not exported)."""
        c = self.side_channels
        return 0 if c is None else 2 * c + c * self.num_classes + self.num_classes

    @property
    def num_params(self) -> int:
        """Trainable parameters of the inference network (no side head)."""
        return self.stem_params + sum(b.num_params for b in self.blocks) + self.head_params

    def training_bytes(self, batch: int) -> int:
        """A lower estimate of the memory one training process needs at `batch` images per tower: float32
        weights, gradients and momentum, a checkpoint's copy, and the activations kept for the backward pass."""
        per_image = sum(b.activation_floats for b in self.blocks) + 2 * self.image_size ** 2 * self.stem_channels
        return 4 * (4 * (self.num_params + self.side_params) + batch * per_image)

    @property
    def stem_flops(self) -> int:
        if self.style == CIFAR_STYLE:
            return self.image_size ** 2 * 9 * 3 * self.stem_channels
        s = -(-self.image_size // 2)
        return s * s * 49 * 3 * self.stem_channels

    @property
    def flops(self) -> int:
        head = self.head_channels * self.num_classes
        return self.stem_flops + sum(b.flops for b in self.blocks) + head

    # ---- transformations --------------------------------------------------------------------
    def without(self, names: Iterable[str]) -> "Plan":
        """The same plan with the residual branches of `names` removed (shortcut paths stay)."""
        names = set(names)
        unknown = names - set(self.block_names)
        if unknown:
            raise UserError("cannot remove unknown block(s) %s from this plan" % ", ".join(sorted(unknown)))
        blocks = tuple(dataclasses.replace(b, residual=False) if b.name in names else b for b in self.blocks)
        return dataclasses.replace(self, blocks=blocks)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = [dataclasses.asdict(b) for b in self.blocks]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d) -> "Plan":
        d = dict(d)
        d["blocks"] = tuple(Block(**b) for b in d["blocks"])
        return cls(**d)

    @classmethod
    def from_json(cls, text) -> "Plan":
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as e:
            raise UserError("not a valid plan.json (%s); it is written by the training scripts" % e)

    def save(self, path):
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path) -> "Plan":
        try:
            with open(path) as f:
                return cls.from_json(f.read())
        except FileNotFoundError:
            raise UserError("%s not found; a training log directory holds plan.json" % path)


def cifar_plan(n: int, num_classes: int = 10, image_size: int = 32, width: int = 1, bottleneck: bool = False) -> Plan:
    """Pre-activation ResNet of depth 6n+2 for 32×32 inputs (CIFAR-10/100, SVHN; the digits demo: 16×16); with
    `bottleneck`, the pre-activation paper's bottleneck network of depth 9n+2 (cifar_bottleneck_blocks).

    `width` k > 1 gives the wide residual network WRN-(6n+4)-k of Zagoruyko & Komodakis (2016): groups of 16k,
    32k and 64k channels after the 16-channel stem (WRN-28-10 is n=4, k=10). Where a block changes the channel
    count it has a 1×1 convolution shortcut (stride 1 or 2) fed, like its residual branch, by the block's
    BN+ReLU, as in the WRN paper's code: zero-padding 16 channels up to 160 would leave nine tenths of the
    shortcut's channels empty, and the conv shortcuts are part of the published parameter counts (36.5 M). With
    k = 1 the network is the paper's CIFAR ResNet: parameter-free shortcuts (2×2 average pool, zero padding).
    """
    if not isinstance(n, int) or n < 1:
        raise UserError("number of blocks per group must be an integer >= 1, got %r" % (n,))
    if not isinstance(width, int) or width < 1:
        raise UserError("width must be an integer >= 1, got %r" % (width,))
    if num_classes < 2:
        raise UserError("num_classes must be >= 2, got %r" % (num_classes,))
    if bottleneck:
        return Plan(style=CIFAR_STYLE, num_classes=num_classes, image_size=image_size, stem_channels=16,
                    blocks=cifar_bottleneck_blocks(n, image_size, width), side_block="res2.%d" % (n // 2))
    blocks = []
    size, channels = image_size, 16
    for g, group_width in enumerate((16, 32, 64), start=1):
        out = group_width * width
        for k in range(n):
            stride = 2 if (g > 1 and k == 0) else 1
            first_of_net = g == 1 and k == 0
            if width > 1 and channels != out:
                preact = PREACT_NONE if first_of_net else PREACT_BOTH
                shortcut = SHORTCUT_CONV
            else:
                preact = PREACT_NONE if first_of_net else PREACT_RESIDUAL
                shortcut = SHORTCUT_POOL_PAD if stride == 2 else SHORTCUT_IDENTITY
            blocks.append(Block(
                name="res%d.%d" % (g, k), group=g, index=k, kind="basic",
                in_channels=channels, mid_channels=out, out_channels=out,
                stride=stride, in_size=size, preact=preact, shortcut=shortcut))
            size, channels = -(-size // stride), out
    return Plan(style=CIFAR_STYLE, num_classes=num_classes, image_size=image_size, stem_channels=16,
                blocks=tuple(blocks), side_block="res2.%d" % (n // 2))


def cifar_bottleneck_blocks(n: int, image_size: int, width: int = 1) -> Tuple[Block, ...]:
    """The units of ResNet-164 (n = 18) and ResNet-1001 (n = 111) of He et al., "Identity Mappings in Deep
    Residual Networks" (2016), as their released code builds them (KaimingHe/resnet-1k-layers): three groups of n
    bottleneck units (1x1, 3x3, 1x1) of 64, 128 and 256 output channels (inner width a quarter), after a
    16-channel stem. The first unit of each group changes the channel count: BN+ReLU feeds both branches, the
    shortcut is a 1x1 convolution with the unit's stride, and the first 1x1 convolution of the residual branch
    carries the stride. `width` k multiplies every channel count but the stem's."""
    blocks = []
    size, channels = image_size, 16
    for g, group_width in enumerate((16, 32, 64), start=1):
        mid = group_width * width
        out = 4 * mid
        for k in range(n):
            stride = 2 if (g > 1 and k == 0) else 1
            if k == 0:  # 16 -> 64k, 64k -> 128k, 128k -> 256k
                preact = PREACT_NONE if g == 1 else PREACT_BOTH  # the stem already ends in BN+ReLU
                shortcut = SHORTCUT_CONV
            else:
                preact, shortcut = PREACT_RESIDUAL, SHORTCUT_IDENTITY
            blocks.append(Block(
                name="res%d.%d" % (g, k), group=g, index=k, kind="bottleneck",
                in_channels=channels, mid_channels=mid, out_channels=out, stride=stride, in_size=size,
                preact=preact, shortcut=shortcut, strided_conv=1))
            size, channels = -(-size // stride), out
    return tuple(blocks)


def imagenet_plan(depth: int, num_classes: int = 1000, image_size: int = 224) -> Plan:
    """Pre-activation ResNet-18/34/50/101/152 for ImageNet-sized inputs."""
    if depth not in IMAGENET_DEPTHS:
        raise UserError("unsupported ImageNet depth %r; choose one of %s"
                        % (depth, ", ".join(map(str, sorted(IMAGENET_DEPTHS)))))
    if num_classes < 2:
        raise UserError("num_classes must be >= 2, got %r" % (num_classes,))
    kind, counts = IMAGENET_DEPTHS[depth]
    expansion = 4 if kind == "bottleneck" else 1
    blocks = []
    size = -(-(-(-image_size // 2)) // 2)  # conv0 stride 2, then max pool stride 2
    channels = 64
    for g, (width, count, group_stride) in enumerate(zip((64, 128, 256, 512), counts, (1, 2, 2, 2))):
        for k in range(count):
            stride = group_stride if k == 0 else 1
            out = width * expansion
            if g == 0 and k == 0:
                preact = PREACT_NONE
            elif k == 0:
                preact = PREACT_BOTH
            else:
                preact = PREACT_RESIDUAL
            blocks.append(Block(
                name="group%d/block%d" % (g, k), group=g, index=k, kind=kind,
                in_channels=channels, mid_channels=width, out_channels=out,
                stride=stride, in_size=size, preact=preact,
                shortcut=SHORTCUT_CONV if channels != out else SHORTCUT_IDENTITY))
            size, channels = -(-size // stride), out
    # Side head after block floor(N/2) of all N blocks (1-based), as the paper says; for
    # ResNet-101 this is group2/block8, the released code's position.
    side = blocks[len(blocks) // 2 - 1].name
    return Plan(style=IMAGENET_STYLE, num_classes=num_classes, image_size=image_size, stem_channels=64,
                blocks=tuple(blocks), side_block=side)
