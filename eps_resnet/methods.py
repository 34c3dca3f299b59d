"""Pruning methods: what each adds to training, and what it removes at export.

  BlockGates    ε-ResNet (paper Sec. 3): strict-identity gates shut whole residual blocks while the network
                trains; the export removes every block whose response stays below ε on held-out images (or, with
                criterion "ema", whose gate the moving average holds shut, as the released code did).
  ChannelSlots  channels after VACL (ours beyond VACL's abstract; eps_resnet.channels): a regulariser over the
                channels skip connections tie together; the export removes every channel slot whose norm falls
                below a threshold, and the reduced network must compute the kept one with those slots zeroed.

A run trains with the methods its recipe names (`training_methods`; none for a plain run without a penalty), and
its export applies them in the same order (`export_methods`), each narrowing the Decision the one before left.
In training a method may add a term to the loss (`training_cost`; the gates need none, they act inside the
network), callbacks (`training_callbacks`) and a part of each epoch's record (`epoch_record`); at export it
decides (`decide`).
"""
import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import numpy as np

from . import UserError
from .plan import Plan
from .reduction import Reduction
from .rundir import counts_as_discarded


@dataclass(frozen=True)
class Reference:
    """A network the reduced one must compute exactly (the export checks it), named by the method that chose it."""
    plan: Plan
    checkpoint: str
    method: str


@dataclass(frozen=True)
class Calibration:
    """The trained network over the export's calibration images: its logits and, for a gated network, each block's
    per-image max|F| and the ε it trained with ({} and None for a plain one)."""
    logits: np.ndarray
    maxima: Dict[str, np.ndarray]
    epsilon: Optional[float]


@dataclass
class Decision:
    """What the export removes, and why."""
    reduction: Reduction
    plan: Plan                        # the reduced network
    evidence: List[dict]              # per block: calibration max, ε, gate average, kernel norm, removed
    calibration: Calibration          # what the trained network computed, the reference unless `reference` is set
    above: bool = False               # removes more than the trained network shuts (blocks above the trained ε)
    checkpoint: str = ""              # weights of the reduced network (the run's, or sliced to its channels)
    details: Dict[str, dict] = field(default_factory=dict)  # a method's own evidence, by its report key
    reference: Optional[Reference] = None  # else the trained network is the reference


@dataclass
class MethodCallbacks:
    """A method's training callbacks, by when they run at an epoch's end: `agree` before validation (what the
    validation of the reduced network reads), `schedule` after it and before the learning rate (what the next
    epoch trains with). `gates`: the callback whose `discarded_cnt` the adaptive learning rate and the records
    read (gate_callbacks.GateAgreement), if the method has one."""
    agree: list = field(default_factory=list)
    schedule: list = field(default_factory=list)
    gates: object = None


class PruningMethod:
    """The interface; each method overrides what it takes part in."""
    report_key = ""

    def training_callbacks(self, recipe, plan: Plan, logdir: str, ranks) -> MethodCallbacks:
        """Its tensorpack callbacks for a run of `recipe` in `logdir` (`ranks`: the Horovod ranks, or None)."""
        return MethodCallbacks()

    def training_cost(self, model, gates):
        """A scalar added to the training loss, or None. `model`: the EpsResNet being built (its plan, this
        tower's kernels, which blocks are open); `gates`: per gated block (is_discarded, batch_response_max)."""
        return None

    def epoch_record(self, plan: Plan, kernels: Dict[str, np.ndarray], open_blocks: List[str], put_scalar) -> \
            Optional[dict]:
        """This method's part of an epoch's record (discards.jsonl, under `report_key`), or None."""
        return None

    def record_variables(self, plan: Plan) -> List[str]:
        """The variables `epoch_record` reads."""
        return []

    def decide(self, run, decision: Decision, folder: str) -> Decision:
        """`decision` narrowed by this method; files it writes go into `folder`."""
        return decision

    def trained_line(self, record: dict) -> Optional[str]:
        """What the closing summary of training says of this method's part of the last epoch's record."""
        return None

    def decided_line(self, details: dict) -> Optional[str]:
        """What the export says of this method's part of the decision (`decision.details[report_key]`)."""
        return None


# ---- ε-ResNet ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockGates(PruningMethod):
    epsilon: Optional[float] = None   # export: remove at this ε (a frontier point) instead of the trained one
    criterion: str = "calibration"    # or "ema": the gates' moving averages, as the released code
    report_key = "blocks"

    def training_callbacks(self, recipe, plan, logdir, ranks) -> MethodCallbacks:
        """The gates' statistics agreed over towers and ranks; ε after the warm-up, fixed or chosen (auto)."""
        from .gate_callbacks import AutoEpsilon, GateAgreement
        from .hyperparams import PolicySetter
        from .schedule import EpsilonPolicy
        agreement = GateAgreement(plan, ranks)
        if recipe.auto_epsilon:
            epsilon = AutoEpsilon(recipe, plan, logdir, ranks)
        else:
            epsilon = PolicySetter("epsilon", EpsilonPolicy(recipe.epsilon, recipe.epsilon_start_epoch))
        return MethodCallbacks(agree=[agreement], schedule=[epsilon], gates=agreement)

    def decide(self, run, decision: Decision, folder: str) -> Decision:
        """Marks the removed blocks in the per-block table (`decision.evidence`, one row per gated block)."""
        trained = decision.calibration.epsilon
        check_export_epsilon(self.epsilon, run, self.criterion, trained)
        above = self.epsilon is not None and self.epsilon > trained
        epsilon = self.epsilon if above else trained
        removed = []
        for row in decision.evidence:
            if self.criterion == "ema":
                row["discarded"] = counts_as_discarded(row["ema_is_discarded"], "released")
            else:
                row["discarded"] = row["calibration_max"] < epsilon
            row["epsilon"] = epsilon
            if row["discarded"]:
                removed.append(row["block"])
        reduction = Reduction(decision.reduction.removed_blocks + tuple(removed), decision.reduction.kept_channels)
        return replace(decision, reduction=reduction, above=above)


def check_export_epsilon(epsilon: Optional[float], run, criterion: str, trained: Optional[float] = None):
    """A UserError unless `epsilon` (prune_export --epsilon, a frontier point) can be exported from `run`; with the
    `trained` ε (read from the checkpoint by the calibration pass), also unless it is at least that."""
    if epsilon is None:
        return
    if not run.gated:
        raise UserError("--epsilon applies to ε-ResNet runs; this is a plain ResNet run (no gates): drop --epsilon")
    if criterion != "calibration":
        raise UserError("--epsilon removes blocks by their calibration responses; drop --criterion %s" % criterion)
    if trained is not None and not epsilon >= trained:
        raise UserError("--epsilon %g is below the run's trained ε %g, where the gated model already shuts more blocks; "
                        "pass a value of at least %g (python -m eps_resnet.frontier lists useful ones)"
                        % (epsilon, trained, trained))


# ---- channels after VACL -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelSlots(PruningMethod):
    penalty: float = 0.0              # training: the regulariser's weight
    variance: float = 1.0             # training: its variance-aware term's weight against the cross-layer term
    threshold: Optional[float] = None  # export: remove slots with a norm below this
    report_key = "channels"

    def training_cost(self, model, gates):
        from tensorpack.tfutils.summary import add_moving_summary
        from .channels import channel_groups, penalty_tensor
        from .tfcompat import tf
        with tf.name_scope("channels"):
            regulariser, cross, aware = penalty_tensor(channel_groups(model.plan), model.tower_kernels(),
                                                       model.blocks_open(gates), self.variance)
            cost = tf.multiply(regulariser, self.penalty, name="channel_cost")
        add_moving_summary(cost, cross, aware)
        return cost

    def record_variables(self, plan: Plan) -> List[str]:
        from .channels import channel_groups
        return sorted({m.variable for m in channel_groups(plan).members})

    def epoch_record(self, plan, kernels, open_blocks, put_scalar) -> dict:
        """The slots' norms over the blocks still open: how many lie below the export's default threshold (also
        a TensorBoard scalar), and their spread."""
        from .channels import DEFAULT_THRESHOLD, channel_groups, slot_norms
        norms = slot_norms(channel_groups(plan), kernels, open_blocks)
        below = int(np.sum(norms < DEFAULT_THRESHOLD))
        put_scalar("channels/share_below_threshold", below / len(norms))
        return {"slots": len(norms), "below_threshold": below, "threshold": DEFAULT_THRESHOLD,
                "norm_percentiles": [float(q) for q in np.percentile(norms, [0, 10, 50, 90, 100])]}

    def trained_line(self, record: dict) -> str:
        return ("channel slots below norm %g: %d of %d (prune_export.py removes them; --channel-threshold sets "
                "another norm)" % (record["threshold"], record["below_threshold"], record["slots"]))

    def decided_line(self, details: dict) -> str:
        return "channels: %d of %d removed below norm %g" % (details["removed"], details["slots"], details["threshold"])

    def decide(self, run, decision: Decision, folder: str) -> Decision:
        """Slots below the threshold in the network the gates left; a channel reduction writes the sliced
        checkpoint (the reduced network's weights) and the masked one (the reference) into `folder`."""
        import os
        from .channels import channels_to_keep
        from .inference import read_variables, write_variables
        from .reduction import slice_variables
        variables = read_variables(decision.checkpoint)
        gated_away = decision.reduction.removed_blocks
        reduction, evidence, zeroed = channels_to_keep(run.plan, gated_away, variables, self.threshold)
        for row in decision.evidence:
            row["emptied_by_channels"] = row["block"] in evidence["blocks_emptied"]
        details = dict(decision.details, **{self.report_key: evidence})
        if not evidence["removed"]:
            return replace(decision, details=details)
        sliced, masked = os.path.join(folder, "channels-sliced"), os.path.join(folder, "channels-masked")
        write_variables(slice_variables(run.plan, reduction, variables), sliced)
        write_variables(zeroed, masked)
        return replace(decision, reduction=reduction, checkpoint=sliced, details=details,
                       reference=Reference(run.plan.without(gated_away), masked, self.report_key))


def check_channel_threshold(threshold: Optional[float]):
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise UserError("--channel-threshold takes a finite channel norm >= 0 (0: keep every channel), got %r"
                        % (threshold,))


# ---- which methods ---------------------------------------------------------------------------------------------
def training_methods(recipe) -> List[PruningMethod]:
    """The methods a run of `recipe` trains with: the gates unless plain, channels with a penalty."""
    methods: List[PruningMethod] = []
    if not recipe.plain:
        methods.append(BlockGates())
    if recipe.channel_penalty > 0:
        methods.append(ChannelSlots(penalty=recipe.channel_penalty, variance=recipe.channel_variance))
    return methods


def export_methods(recipe: dict, epsilon: Optional[float] = None, criterion: str = "calibration",
                   channel_threshold: Optional[float] = None) -> List[PruningMethod]:
    """What an export of a run trained with `recipe` (run.json's) applies: the blocks of a gated run; channels
    with `channel_threshold` > 0, or by default (None) at eps_resnet.channels.DEFAULT_THRESHOLD for a run trained
    with --channel-penalty."""
    from .channels import DEFAULT_THRESHOLD
    check_channel_threshold(channel_threshold)
    methods: List[PruningMethod] = [BlockGates(epsilon, criterion)] if recipe.get("epsilon") is not None else []
    if channel_threshold is None and recipe.get("channel_penalty", 0) > 0:
        channel_threshold = DEFAULT_THRESHOLD
    if channel_threshold:
        methods.append(ChannelSlots(threshold=channel_threshold))
    return methods
