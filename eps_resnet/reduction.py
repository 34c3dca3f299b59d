"""What pruning removed from a plan, as a value: whole blocks, and channels of the groups that must shrink together.

Pure Python and NumPy (no TensorFlow). A channel group is a set of channels that skip connections tie together:
a channel of a block's output is also a channel of its input when the shortcut is the identity, so both must go
or stay together (Torch-Pruning calls these dependency groups).
  - the stem's output channels form the group `conv0`;
  - a zero-padding shortcut (CIFAR, 2x2 pool) carries its input's channels on, and its padded channels, which only
    residual branches write, start a group `<block>/pad`;
  - a 1x1 convolution shortcut starts a group `<block>/shortcut`: its output channels are new;
  - inside a residual branch the outputs of each inner convolution form a group of their own
    (`<block>/conv1`; a bottleneck also `<block>/conv2`).
A `Reduction` lists the removed blocks and, per group, the kept channel indices (groups it does not name keep
every channel). `reduced_plan` gives the plan with per-convolution widths, `kept_positions` the kept channels of
every tensor, and `slice_variables` the weights of the reduced network from the full one's: block removal is
the case with no channels named.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from . import UserError
from .fileio import atomic_write_text
from .plan import PREACT_BOTH, PREACT_RESIDUAL, SHORTCUT_CONV, SHORTCUT_POOL_PAD, Plan

REDUCTION_FILE = "reduction.json"  # beside plan.json in a run (after pruning) and in an export

MOMENTUM = "/Momentum"  # the optimiser's slot of a variable, same shape
Slot = Tuple[str, int]  # (channel group, index in the group): one channel's identity across tensors


@dataclass(frozen=True)
class ChannelLayout:
    """The coupled channel groups of a plan, and for each tensor the group slot at each channel position.

    Tensors: `conv0` (the stem's output), `<block>/out` (a block's output: the next block's input),
    `<block>/conv1` and `<block>/conv2` (inner convolutions' outputs)."""
    group_sizes: Dict[str, int]
    tensors: Dict[str, Tuple[Slot, ...]]
    block_input: Dict[str, str]  # block name -> the tensor it reads

    def trunk_groups(self) -> List[str]:
        return [g for g in self.group_sizes if not g.endswith(("/conv1", "/conv2"))]


def channel_layout(plan: Plan) -> ChannelLayout:
    """Which channels skip connections tie together in `plan` (see the module docstring)."""
    sizes: Dict[str, int] = {}
    tensors: Dict[str, Tuple[Slot, ...]] = {}
    block_input: Dict[str, str] = {}

    def new_group(name, size):
        sizes[name] = size
        return [(name, i) for i in range(size)]

    trunk = new_group("conv0", plan.stem_channels)
    tensors["conv0"] = tuple(trunk)
    current = "conv0"
    for b in plan.blocks:
        block_input[b.name] = current
        if len(trunk) != b.in_channels:
            raise UserError("plan.json is inconsistent: block %s reads %d channels, the tensor before it has %d"
                            % (b.name, b.in_channels, len(trunk)))
        if b.shortcut == SHORTCUT_POOL_PAD:
            before, _ = b.padding
            padded = new_group(b.name + "/pad", b.out_channels - b.in_channels)
            trunk = padded[:before] + trunk + padded[before:]
        elif b.shortcut == SHORTCUT_CONV:
            trunk = new_group(b.name + "/shortcut", b.out_channels)
        if b.residual:
            for k, width in enumerate(b.inner_channels, start=1):
                tensors["%s/conv%d" % (b.name, k)] = tuple(new_group("%s/conv%d" % (b.name, k), width))
        current = b.name + "/out"
        tensors[current] = tuple(trunk)
    return ChannelLayout(sizes, tensors, block_input)


@dataclass(frozen=True)
class Reduction:
    removed_blocks: Tuple[str, ...] = ()
    kept_channels: Dict[str, Tuple[int, ...]] = field(default_factory=dict)  # group -> kept indices, ascending

    @property
    def prunes_channels(self) -> bool:
        return bool(self.kept_channels)

    def check(self, plan: Plan) -> "Reduction":
        """This reduction, if it fits `plan`; else a UserError that names what does not."""
        unknown = sorted(set(self.removed_blocks) - set(plan.block_names))
        if unknown:
            raise UserError("the reduction removes block(s) %s that the plan does not have" % ", ".join(unknown))
        sizes = channel_layout(plan.without(self.removed_blocks)).group_sizes
        for group, kept in self.kept_channels.items():
            if group not in sizes:
                raise UserError("the reduction keeps channels of %r, which is not a channel group of this plan "
                                "(removed blocks have no inner groups)" % group)
            if not kept:
                raise UserError("the reduction keeps no channel of %s; remove the block instead, or keep at least "
                                "one" % group)
            if list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= sizes[group]:
                raise UserError("the kept channels of %s must be distinct ascending indices below %d, got %s"
                                % (group, sizes[group], list(kept)[:8]))
        return self

    def kept(self, group: str, size: int) -> Tuple[int, ...]:
        return tuple(self.kept_channels.get(group, range(size)))

    # ---- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"removed_blocks": list(self.removed_blocks),
                "kept_channels": {g: list(k) for g, k in sorted(self.kept_channels.items())}}

    @classmethod
    def from_dict(cls, d) -> "Reduction":
        try:
            return cls(tuple(d.get("removed_blocks", ())),
                       {str(g): tuple(int(i) for i in k) for g, k in d.get("kept_channels", {}).items()})
        except (AttributeError, TypeError, ValueError) as e:
            raise UserError("not a valid %s (%s); it is written by the export" % (REDUCTION_FILE, e))

    def save(self, path):
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "Reduction":
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except FileNotFoundError:
            raise UserError("%s not found; an export holds %s beside plan.json" % (path, REDUCTION_FILE))
        except ValueError as e:
            raise UserError("%s is not JSON (%s); restore it from the export" % (path, e))


def kept_positions(plan: Plan, reduction: Reduction) -> Dict[str, List[int]]:
    """For each tensor of the full plan's layout (blocks removed), the channel positions the reduction keeps."""
    layout = channel_layout(plan.without(reduction.removed_blocks))
    kept = {g: set(reduction.kept(g, n)) for g, n in layout.group_sizes.items()}
    return {t: [p for p, (g, i) in enumerate(slots) if i in kept[g]] for t, slots in layout.tensors.items()}


def reduced_plan(plan: Plan, reduction: Reduction) -> Plan:
    """`plan` without the removed blocks and with every convolution as wide as the channels it keeps."""
    reduction.check(plan)
    without = plan.without(reduction.removed_blocks)
    layout = channel_layout(without)
    positions = kept_positions(plan, reduction)
    blocks = []
    for b in without.blocks:
        changes = {"in_channels": len(positions[layout.block_input[b.name]]),
                   "out_channels": len(positions[b.name + "/out"])}
        if b.shortcut == SHORTCUT_POOL_PAD:
            before, _ = b.padding  # the padded channels kept before the ones the shortcut carries on
            kept_before = sum(1 for p in positions[b.name + "/out"] if p < before)
            even = (changes["out_channels"] - changes["in_channels"]) // 2
            changes["pad_before"] = None if kept_before == even else kept_before  # None: as unreduced plans
        if b.residual:
            inner = [len(positions["%s/conv%d" % (b.name, k)]) for k in range(1, len(b.inner_channels) + 1)]
            changes["mid_channels"] = inner[0]
            if len(inner) == 2:
                changes["mid2_channels"] = None if inner[1] == inner[0] else inner[1]
        blocks.append(dataclasses.replace(b, **changes))
    return dataclasses.replace(without, stem_channels=len(positions["conv0"]), blocks=tuple(blocks))


def variable_axes(plan: Plan) -> Dict[str, Tuple[str, ...]]:
    """For each weight variable of the inference network (and the side head), the tensor whose channels each of
    its sliced axes follows: a kernel [k, k, in, out] is sliced on its last two axes, BatchNorm's on its one."""
    def bn(prefix, tensor):
        return {prefix + "/bn/" + v: (tensor,) for v in ("gamma", "beta", "mean/EMA", "variance/EMA")}

    axes = {"conv0/W": ("", "conv0")}
    axes.update(bn("conv0", "conv0"))
    layout = channel_layout(plan)
    for b in plan.blocks:
        x, out = layout.block_input[b.name], b.name + "/out"
        if b.preact == PREACT_BOTH or (b.preact == PREACT_RESIDUAL and b.residual):
            axes.update(bn(b.name + "/preact", x))
        if b.shortcut == SHORTCUT_CONV:
            axes[b.name + "/convshortcut/W"] = (x, out)
        if b.residual:
            inner = ["%s/conv%d" % (b.name, k) for k in range(1, len(b.inner_channels) + 1)]
            chain = [x] + inner + [out]
            for k in range(len(chain) - 1):
                axes["%s/conv%d/W" % (b.name, k + 1)] = (chain[k], chain[k + 1])
            for t in inner:
                axes.update(bn(t, t))
    last = plan.blocks[-1].name + "/out"
    axes.update(bn("bnlast", last))
    axes["linear/W"] = (last, "")
    if plan.side_block:
        side = plan.side_block + "/out"
        axes.update(bn("side/bnlast", side))
        axes["side/linear/W"] = (side, "")
    return axes


def slice_variables(plan: Plan, reduction: Reduction, variables: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The variables of the reduced network from the full network's: removed blocks' branches dropped, every
    kernel and BatchNorm vector cut to the kept channels; other variables (step, ε, means, classifier biases)
    unchanged."""
    reduction.check(plan)
    positions = kept_positions(plan, reduction)
    full_axes = variable_axes(plan)
    kept_axes = variable_axes(plan.without(reduction.removed_blocks))
    out = {}
    for name, value in variables.items():
        weight = name[:-len(MOMENTUM)] if name.endswith(MOMENTUM) else name  # the optimiser's slot follows it
        if weight in full_axes and weight not in kept_axes:
            continue  # a removed block's residual branch
        tensors = kept_axes.get(weight)
        if tensors is None:
            out[name] = value
            continue
        first_axis = value.ndim - len(tensors)  # kernels [k, k, in, out], BatchNorm [c], classifiers [c, classes]
        for offset, tensor in enumerate(tensors):
            if tensor:
                value = np.take(value, positions[tensor], axis=first_axis + offset)
        out[name] = value
    return out
