"""Channel pruning across skip connections, after VACL (Gao et al., "VACL: Variance-Aware Cross-Layer
Regularization for Pruning Deep Residual Networks", ICCV 2019 Workshops). Only VACL's abstract is public; what
it states is used as stated, the rest is ours (docs/FIDELITY.md, "Channel pruning").

VACL, as stated: "the i-th filters of layers connected by skip-connections are grouped into one regularization
group", and a variance-aware term "takes into account both the first and second-order statistics of the connected
layers to constrain the variance within a group".

Ours, on the coupled channel groups of `reduction.channel_layout`:
  - a group slot is one channel of one group (`conv0` #3, `res2.0/pad` #0, `res1.2/conv1` #7, ...); its members
    are every kernel slice that writes or reads that channel: the producers' output filters and the consumers'
    input slices (the classifier's rows included), so that a slot whose members are all near zero can be cut out
    and nothing downstream notices (BatchNorm's ReLU(β) of a dead channel then meets zero weights);
  - cross-layer term: the sum over slots of the slot's L2 norm (group lasso);
  - variance-aware term: per slot, the standard deviation of its members' norms, one norm per kernel (the
    second-order statistic around their mean, the first): it pulls a slot's kernels to shrink together;
  - only open blocks count: a block whose gate is shut (ε-ResNet) collapses under weight decay anyway, and its
    small norms would inflate every variance it takes part in.
The loss gains `penalty * (cross_layer + variance_weight * variance_aware)`. At export, slots whose norm over the
kept network is below a threshold are removed (at least one channel of each group stays).
"""
import functools
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .plan import Plan
from .reduction import Reduction, channel_layout, variable_axes

TINY = 1e-8  # inside square roots: the norm's gradient stays finite at zero
DEFAULT_THRESHOLD = 0.05  # export: a slot with norm below this (over the kept network) is removed


@dataclass(frozen=True)
class Member:
    """The slices of one kernel along one axis: channel k of that axis belongs to slot `slots[k]`."""
    variable: str
    axis: int                    # counted from the end: -1 output channels, -2 input channels
    slots: Tuple[int, ...]
    block: Optional[str]         # the block whose residual branch holds the kernel (its gate), else None


@dataclass(frozen=True)
class ChannelGroups:
    """The slots of a plan (group name and index in the group) and the kernel slices that make up each."""
    slots: Tuple[Tuple[str, int], ...]
    members: Tuple[Member, ...]

    @property
    def num_slots(self) -> int:
        return len(self.slots)

    def group_slots(self) -> Dict[str, List[int]]:
        out: Dict[str, List[int]] = {}
        for s, (group, _) in enumerate(self.slots):
            out.setdefault(group, []).append(s)
        return out


@functools.lru_cache(maxsize=8)
def channel_groups(plan: Plan) -> ChannelGroups:
    """Every channel slot of `plan` and its members (kernels of the inference network; the side head, used in
    training only, is left out). Kept for the plans last asked for: each tower and each epoch's record asks."""
    layout = channel_layout(plan)
    slot_ids, slots = {}, []
    for group, size in layout.group_sizes.items():
        for i in range(size):
            slot_ids[(group, i)] = len(slots)
            slots.append((group, i))
    branch_of = {kernel: b.name for b in plan.blocks for kernel in b.residual_kernels}
    members = []
    for name, tensors in variable_axes(plan).items():
        if not name.endswith("/W") or name.startswith("side/"):
            continue
        for offset, tensor in enumerate(tensors):
            if tensor:
                members.append(Member(name, offset - len(tensors),
                                      tuple(slot_ids[slot] for slot in layout.tensors[tensor]), branch_of.get(name)))
    return ChannelGroups(tuple(slots), tuple(members))


def _squares_along(value: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(a for a in range(value.ndim) if a != value.ndim + axis)
    return np.sum(np.square(value.astype(np.float64)), axis=other)


def slot_norms(groups: ChannelGroups, variables: Dict[str, np.ndarray],
               open_blocks: Optional[Iterable[str]] = None) -> np.ndarray:
    """Each slot's L2 norm over its members (of open blocks; `open_blocks` None: every block is open)."""
    open_blocks = None if open_blocks is None else set(open_blocks)
    total = np.zeros(groups.num_slots)
    for member in groups.members:
        if member.block is None or open_blocks is None or member.block in open_blocks:
            total[list(member.slots)] += _squares_along(variables[member.variable], member.axis)
    return np.sqrt(total)


def penalty_tensor(groups: ChannelGroups, kernels: Dict[str, "object"], block_open: Dict[str, "object"],
                   variance_weight: float):
    """The regulariser in the training graph: cross-layer + variance_weight * variance-aware (see the module
    docstring). `kernels`: variable name -> tensor; `block_open`: block name -> float scalar tensor (1 open,
    0 shut; no gradient flows through it), blocks not named are open.

    Computed over one flat vector with an entry per member slice: a dense [members, slots] matrix would hold
    about 50 M numbers at ResNet-1001, where the slices number about 0.1 M."""
    from .tfcompat import tf
    gated = sorted({m.block for m in groups.members if m.block in block_open})
    gate_of = {block: i + 1 for i, block in enumerate(gated)}  # 0: a kernel outside any residual branch
    open_now = tf.stack([tf.constant(1.0)] + [block_open[block] for block in gated])
    squares, slot_of, gate_index = [], [], []
    for member in groups.members:
        w = kernels[member.variable]
        rank = w.shape.rank
        squares.append(tf.reduce_sum(tf.square(w), axis=[a for a in range(rank) if a != rank + member.axis]))
        slot_of.extend(member.slots)
        gate_index.extend([gate_of.get(member.block, 0)] * len(member.slots))
    n = groups.num_slots
    slot_of = tf.constant(slot_of, tf.int32)
    active = tf.gather(open_now, tf.constant(gate_index, tf.int32))  # 1 for a slice of an open block, else 0
    squares = tf.concat(squares, 0) * active
    cross = tf.reduce_sum(tf.sqrt(tf.math.unsorted_segment_sum(squares, slot_of, n) + TINY), name="cross_layer")
    norms = tf.sqrt(squares + TINY)
    count = tf.maximum(tf.math.unsorted_segment_sum(active, slot_of, n), 1.0)
    mean = tf.math.unsorted_segment_sum(active * norms, slot_of, n) / count
    deviation = norms - tf.gather(mean, slot_of)
    variance = tf.math.unsorted_segment_sum(active * tf.square(deviation), slot_of, n) / count
    aware = tf.reduce_sum(tf.sqrt(variance + TINY), name="variance_aware")
    return tf.add(cross, variance_weight * aware, name="channel_penalty"), cross, aware


# ---- export --------------------------------------------------------------------------------------------------
def channels_to_keep(plan: Plan, removed_blocks: Sequence[str], variables: Dict[str, np.ndarray],
                     threshold: float) -> Tuple[Reduction, dict, Dict[str, np.ndarray]]:
    """What to remove from the network `removed_blocks` leave of `plan`: every slot whose norm is below
    `threshold`; a block whose inner channels are all below it goes whole; otherwise the strongest channel of a
    group stays. Returns the reduction, the evidence for the report, and the variables of the kept network with
    the removed slots' weights zeroed (the network the reduced one must compute)."""
    kept_plan = plan.without(removed_blocks)
    groups = channel_groups(kept_plan)
    norms = slot_norms(groups, variables)
    by_group = groups.group_slots()
    gone = norms < threshold
    emptied = [b.name for b in kept_plan.blocks if b.residual and any(
        gone[by_group["%s/conv%d" % (b.name, k)]].all() for k in range(1, len(b.inner_channels) + 1))]
    emptied_groups = {"%s/conv%d" % (b, k) for b in emptied for k in (1, 2)}
    kept_channels = {}
    for group, slots in by_group.items():
        if group in emptied_groups:
            gone[slots] = True  # the block goes whole: every channel of its branch
            continue
        keep = [i for i, s in enumerate(slots) if not gone[s]]
        if not keep:  # a group of the trunk keeps its strongest channel
            keep = [int(np.argmax(norms[slots]))]
            gone[slots[keep[0]]] = False
        if len(keep) < len(slots):
            kept_channels[group] = tuple(keep)
    evidence = {"threshold": threshold, "slots": groups.num_slots, "removed": int(gone.sum()),
                "groups_thinned": len(kept_channels), "groups": len(by_group), "blocks_emptied": emptied,
                "largest_removed_norm": float(norms[gone].max(initial=0.0)),
                "smallest_kept_norm": float(norms[~gone].min()) if (~gone).any() else 0.0}
    reduction = Reduction(tuple(removed_blocks) + tuple(emptied), kept_channels)
    return reduction, evidence, masked_variables(groups, variables, gone)


def masked_variables(groups: ChannelGroups, variables: Dict[str, np.ndarray], gone: np.ndarray) -> Dict[str, np.ndarray]:
    """`variables` with every slice of the slots flagged in `gone` set to zero."""
    out = dict(variables)
    for member in groups.members:
        drop = [k for k, s in enumerate(member.slots) if gone[s]]
        if drop:
            value = np.array(out[member.variable], copy=True)
            index = [slice(None)] * value.ndim
            index[value.ndim + member.axis] = drop
            value[tuple(index)] = 0
            out[member.variable] = value
    return out
