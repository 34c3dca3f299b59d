"""The paper's figures from a training log directory (PNG), also drawn live into TensorBoard.

    python -m eps_resnet.figures LOGDIR [--out DIR]
"""
import os
from typing import List, Optional

import numpy as np

from . import UserError
from .outputs import Staging, check_out
from .plan import Plan
from .rundir import DISCARDED_THRESHOLD, PLAN_FILE, read_records, read_stats

# ---- figures (paper Figs. 1, 5, 9, 10 and error curves), from the files of a log directory ---------------
FIGURES = ("block_map", "discard_ratio", "group_proportions", "weight_collapse", "error_curves")
KEPT_COLOR, DISCARDED_COLOR = "#1f77b4", "#d62728"


class RunRecords:
    """What the figures need from a run: its plan, per-epoch discard records and stats.json entries."""

    def __init__(self, plan, records, stats=()):
        by_epoch = {r["epoch"]: r for r in records if isinstance(r, dict) and "epoch" in r and "blocks" in r}
        names = set(plan.block_names)
        self.plan = plan
        self.records = [by_epoch[e] for e in sorted(by_epoch)]  # a resumed run may repeat an epoch: last wins
        self.unknown_blocks = sorted({n for r in self.records for n in r["blocks"] if n not in names})
        if self.unknown_blocks:
            self.records = [dict(r, blocks={n: b for n, b in r["blocks"].items() if n in names}) for r in self.records]
        self.stats = list(stats)

    @classmethod
    def load(cls, logdir):
        plan = Plan.load(os.path.join(logdir, PLAN_FILE))
        runrec = cls(plan, read_records(logdir, warn=lambda m: None, strict=False), read_stats(logdir))
        if not runrec.records and not runrec.stats:
            raise UserError("%s has no per-epoch records (discards.jsonl, stats.json); train at least one epoch"
                            % logdir)
        return runrec

    def discarded_at(self, record):
        return {n for n, b in record["blocks"].items() if b["is_discarded"] >= DISCARDED_THRESHOLD}

    def collapse(self) -> List[dict]:
        """Per block discarded at the last record: the epoch its gate closed for good (the first of the epochs it
        has stayed discarded since), its kernel norm then and at the end, and their ratio (paper Fig. 5)."""
        if not self.records:
            return []
        rows = []
        for name in (b.name for b in self.plan.blocks if b.name in self.discarded_at(self.records[-1])):
            closed = len(self.records) - 1
            while closed > 0 and name in self.discarded_at(self.records[closed - 1]):
                closed -= 1
            then = self.records[closed]["blocks"][name]["kernels"]["norm"]
            end = self.records[-1]["blocks"][name]["kernels"]["norm"]
            rows.append({"block": name, "closed_epoch": self.records[closed]["epoch"], "norm_closed": then,
                         "norm_end": end, "ratio": end / then if then else 0.0})
        return rows


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12})
    return plt


def block_map(runrec, ax, export_report=None):
    """Fig. 1: every block along the depth, kept (blue) or discarded (red), groups separated."""
    last = runrec.discarded_at(runrec.records[-1]) if runrec.records else set()
    heights, colors, xs = [], [], []
    for i, b in enumerate(runrec.plan.blocks):
        xs.append(i)
        gone = b.name in last
        heights.append(1.0)
        colors.append(DISCARDED_COLOR if gone else KEPT_COLOR)
    bars = ax.bar(xs, heights, width=0.8, color=colors)
    for g in runrec.plan.groups[1:]:
        first = next(i for i, b in enumerate(runrec.plan.blocks) if b.group == g)
        ax.axvline(first - 0.5, color="k", lw=1, ls="--")
    kept = len(runrec.plan.blocks) - len(last)
    layers_after = runrec.plan.without(last).depth
    ratio = runrec.plan.full_depth / layers_after
    title = "%d of %d blocks discarded, compression %.2f (%d -> %d layers)" % (
        len(last), len(runrec.plan.blocks), ratio, runrec.plan.full_depth, layers_after)
    errors = []
    if runrec.records and runrec.records[-1].get("val_error") is not None:
        errors.append("val. error %.2f%%" % (100 * runrec.records[-1]["val_error"]))
    if export_report and export_report.get("val_error_export") is not None:
        errors.append("reduced %.2f%%" % (100 * export_report["val_error_export"]))
    ax.set_title(title + ("\n" + ", ".join(errors) if errors else ""))
    ax.set_xlabel("block (input -> output)")
    ax.set_yticks([])
    ax.set_ylim(0, 1.35)  # room for the legend above the bars
    ax.set_xlim(-1, len(xs))
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=KEPT_COLOR, label="kept (%d)" % kept),
                       Patch(color=DISCARDED_COLOR, label="discarded (%d)" % len(last))], loc="upper right")
    return bars


def discard_ratio(runrec, ax):
    """Fig. 9: discarded fraction per epoch, learning rate and ε on a second axis, resets marked."""
    epochs = [r["epoch"] for r in runrec.records]
    n = max(1, len(runrec.plan.blocks))
    ratio = [len(runrec.discarded_at(r)) / n for r in runrec.records]
    line = ax.plot(epochs, ratio, "-o", color=DISCARDED_COLOR, ms=3, label="discarded ratio")
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ratio of discarded blocks")
    for r in runrec.records:
        if r.get("lr_reset"):
            ax.axvline(r["epoch"], color="gray", ls=":", lw=1)
    ax2 = ax.twinx()
    ax2.semilogy(epochs, [max(r["learning_rate"], 1e-8) for r in runrec.records], color="k", lw=1, label="learning rate")
    ax2.set_ylabel("learning rate (log)")
    eps = [r["epsilon"] for r in runrec.records]
    ax3 = ax.twinx()
    ax3.spines["right"].set_position(("axes", 1.12))
    ax3.plot(epochs, eps, color="tab:green", lw=1, ls="--", label="ε")
    ax3.set_ylabel("ε")
    ax.set_title("Discarded blocks over training (dotted: learning-rate resets)")
    ax.legend(handles=line + ax2.get_lines() + ax3.get_lines(), loc="upper left")
    return line[0]


def group_proportions(runrec, ax):
    """Fig. 10: per group, the proportion of kept and discarded blocks."""
    last = runrec.discarded_at(runrec.records[-1]) if runrec.records else set()
    groups = runrec.plan.groups
    kept, gone = [], []
    for g in groups:
        blocks = runrec.plan.blocks_in_group(g)
        d = sum(1 for b in blocks if b.name in last)
        gone.append(d / len(blocks))
        kept.append(1 - d / len(blocks))
    labels = ["group %d" % g for g in groups]
    k = ax.bar(labels, kept, color=KEPT_COLOR, label="kept")
    d = ax.bar(labels, gone, bottom=kept, color=DISCARDED_COLOR, label="discarded")
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion of blocks")
    ax.set_title("Kept and discarded blocks per group")
    ax.legend(loc="upper left")
    return k, d


def collapse_block(runrec):
    """The block to show in Fig. 5: the first one discarded, else the one with the smallest kernel norm."""
    for r in runrec.records:
        gone = [b.name for b in runrec.plan.blocks if b.name in runrec.discarded_at(r)]
        if gone:
            return gone[0]
    last = runrec.records[-1]["blocks"]
    return min(last, key=lambda n: last[n]["kernels"]["norm"])


def weight_collapse(runrec, ax, block=None):
    """Fig. 5: min, max and percentiles of a block's kernels against epochs."""
    block = block or collapse_block(runrec)
    epochs = [r["epoch"] for r in runrec.records if block in r["blocks"]]
    pct = np.array([r["blocks"][block]["kernels"]["percentiles"] for r in runrec.records if block in r["blocks"]])
    names = ["min", "10%", "25%", "median", "75%", "90%", "max"]
    lines = []
    for i, name in enumerate(names):
        lines += ax.plot(epochs, pct[:, i], label=name, lw=2 if name in ("min", "max") else 1)
    first = next((r["epoch"] for r in runrec.records if block in runrec.discarded_at(r)), None)
    if first is not None:
        ax.axvline(first, color=DISCARDED_COLOR, ls=":", label="gate closed")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kernel weight")
    ax.set_title("Weights of %s against epochs" % block)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    return lines


def error_curves(runrec, ax):
    """Training and validation error, main and side head, from stats.json."""
    lines = []
    for key, style in (("train_error", "-"), ("val_error", "-o"), ("side_train_error", "--"), ("val_side_error", "--o")):
        pts = [(s["epoch_num"], s[key]) for s in runrec.stats if key in s]
        if pts:
            e, v = zip(*pts)
            lines += ax.plot(e, [100 * x for x in v], style, ms=3, label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title("Training and validation error (main and side head)")
    if lines:
        ax.legend(loc="upper right")
    return lines


def draw(name: str, runrec: "RunRecords", export_report: Optional[dict] = None):
    """A matplotlib Figure of `name` (one of FIGURES)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10 if name == "block_map" else 8, 4 if name == "block_map" else 5))
    if name == "block_map":
        block_map(runrec, ax, export_report)
    elif name == "discard_ratio":
        discard_ratio(runrec, ax)
    elif name == "group_proportions":
        group_proportions(runrec, ax)
    elif name == "weight_collapse":
        weight_collapse(runrec, ax)
    else:
        error_curves(runrec, ax)
    fig.tight_layout()
    return fig


def figure_png(fig):
    """The figure as an RGB uint8 array (for TensorBoard image summaries)."""
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    pyplot().close(fig)
    return img


def save_figure(fig, path: str):
    """Write `fig` as a PNG at `path` (inside an outputs.Staging folder, so no reader sees half a file) and close it."""
    try:
        fig.savefig(path, dpi=100)
    finally:
        pyplot().close(fig)


def write_figures(logdir: str, out_dir: str, export_report: Optional[dict] = None, log=print) -> List[str]:
    """Draw every figure that the records support into out_dir (a folder of the run itself, or outside any run);
    returns the written paths."""
    runrec = RunRecords.load(logdir)
    if runrec.unknown_blocks:
        log("warning: records name blocks not in plan.json (ignored): %s" % ", ".join(runrec.unknown_blocks))
    out_dir = check_out(out_dir, own_run=logdir)
    names = [n for n in FIGURES if n == "error_curves" or runrec.records]
    for name in sorted(set(FIGURES) - set(names), key=FIGURES.index):
        log("skipping %s: no discard records (a plain run, or no finished epoch)" % name)
    with Staging(out_dir, "figures") as stage:
        for name in names:
            save_figure(draw(name, runrec, export_report), os.path.join(stage.path, name + ".png"))
    return [os.path.join(out_dir, name + ".png") for name in names]


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m eps_resnet.figures",
                                description="Draw the paper's figures (PNG) for a training log directory.")
    p.add_argument("logdir", metavar="LOGDIR")
    p.add_argument("--out", metavar="DIR", default=None, help="where to write the PNGs (default: LOGDIR/figures)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.logdir):
        raise UserError("log directory %s does not exist; pass the --logdir of a training run" % args.logdir)
    out = os.path.join(args.logdir, "figures") if args.out is None else args.out
    for path in write_figures(args.logdir, out):
        print(path)
    return 0


if __name__ == "__main__":
    from .guard import main_guard
    main_guard(main, interrupted="interrupted; no figures were written")
