"""The paper's figures from a training log directory (PNG), also drawn live into TensorBoard.

    python -m eps_resnet.figures LOGDIR [--out DIR] [--baseline PLAIN_LOGDIR] [--export EXPORT_DIR]
"""
import os
from typing import List, Optional

import numpy as np

from . import UserError
from .outputs import Staging, check_out
from .rundir import PLAN_FILE, Run, discarded_in_record

# ---- figures, from the files of a log directory ------------------------------------------------------------------
# name -> what it reproduces (the titles and the command's help say it)
FIGURES = {"block_map": "paper Fig. 1: kept and discarded blocks along the depth",
           "gate_heatmap": "ours: Fig. 1 at every epoch, and each block's max|F| / ε",
           "discard_ratio": "paper Fig. 9: ratio of discarded blocks over the epochs",
           "group_proportions": "paper Fig. 10: kept and discarded blocks per group",
           "weight_collapse": "paper Fig. 5: one discarded block's weights over the epochs, the plain run's same "
                              "block as control",
           "responses": "ours: each block's max|F| at the end against ε",
           "error_curves": "ours: validation error of the reduced network per epoch, beside the gated network's "
                           "and the plain run's"}
GATED_FIGURES = tuple(n for n in FIGURES if n != "error_curves")  # need a gated run's records
LIVE_FIGURES = ("block_map", "gate_heatmap", "discard_ratio")    # drawn into TensorBoard at every epoch
KEPT_COLOR, DISCARDED_COLOR, PLAIN_COLOR = "#1f77b4", "#d62728", "#333333"


class RunRecords:
    """What the figures need from a run: its plan, per-epoch records (discards.jsonl), stats.json entries, and
    optionally the same for a plain run trained alike (`baseline`, the control)."""

    def __init__(self, plan, records, stats=(), baseline: Optional["RunRecords"] = None):
        by_epoch = {r["epoch"]: r for r in records if isinstance(r, dict) and "epoch" in r and "blocks" in r}
        names = set(plan.block_names)
        self.plan = plan
        self.records = [by_epoch[e] for e in sorted(by_epoch)]  # a resumed run may repeat an epoch: last wins
        self.unknown_blocks = sorted({n for r in self.records for n in r["blocks"] if n not in names})
        if self.unknown_blocks:
            self.records = [dict(r, blocks={n: b for n, b in r["blocks"].items() if n in names}) for r in self.records]
        self.stats = list(stats)
        self.baseline = baseline

    @classmethod
    def load(cls, logdir, baseline: Optional[str] = None):
        run = Run.open(logdir)
        runrec = cls(run.plan, run.records(strict=False), run.stats(), cls.load(baseline) if baseline else None)
        if not runrec.records and not runrec.stats:
            raise UserError("%s has no per-epoch records (discards.jsonl, stats.json); train at least one epoch"
                            % logdir)
        return runrec

    @property
    def gated(self) -> bool:
        """Whether the records hold gate statistics (a plain run's hold its kernels only)."""
        return bool(self.records) and all(r.get("gated", True) for r in self.records)

    def discarded_at(self, record):
        return set(discarded_in_record(record))

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

    def series(self, key):
        """(epochs, values) of a per-epoch number, from stats.json (every run has it) or else the records."""
        pts = [(s["epoch_num"], s[key]) for s in self.stats if s.get(key) is not None and "epoch_num" in s]
        if not pts:
            pts = [(r["epoch"], r[key]) for r in self.records if r.get(key) is not None]
        return tuple(zip(*pts)) if pts else ((), ())


def titled(ax, name, text):
    """The title `text`, with the paper figure it reproduces."""
    source = FIGURES[name].split(":")[0]
    ax.set_title(text + ("  [%s]" % source if source.startswith("paper") else ""))


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12})
    return plt


def block_map(runrec, ax, export_report=None):
    """Fig. 1: every block along the depth, kept (blue) or discarded (red), groups separated."""
    last = runrec.discarded_at(runrec.records[-1]) if runrec.records else set()
    xs = list(range(len(runrec.plan.blocks)))
    colors = [DISCARDED_COLOR if b.name in last else KEPT_COLOR for b in runrec.plan.blocks]
    bars = ax.bar(xs, [1.0] * len(xs), width=0.8, color=colors)
    group_lines(runrec.plan, ax.axvline)
    kept = len(runrec.plan.blocks) - len(last)
    layers_after = runrec.plan.without(last).depth
    ratio = runrec.plan.full_depth / layers_after
    title = "%d of %d blocks discarded, compression %.2f (%d -> %d layers)" % (
        len(last), len(runrec.plan.blocks), ratio, runrec.plan.full_depth, layers_after)
    errors = []
    if runrec.records and runrec.records[-1].get("val_error_reduced") is not None:
        errors.append("reduced network's validation error %.2f%%" % (100 * runrec.records[-1]["val_error_reduced"]))
    if export_report and export_report.get("val_error_export") is not None:
        errors.append("export %.2f%%" % (100 * export_report["val_error_export"]))
    titled(ax, "block_map", title + ("\n" + ", ".join(errors) if errors else ""))
    ax.set_xlabel("block (input -> output)")
    ax.set_yticks([])
    ax.set_ylim(0, 1.35)  # room for the legend above the bars
    ax.set_xlim(-1, len(xs))
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=KEPT_COLOR, label="kept (%d)" % kept),
                       Patch(color=DISCARDED_COLOR, label="discarded (%d)" % len(last))], loc="upper right")
    return bars


def group_lines(plan, draw_line):
    """A dashed line before the first block of every group but the first (draw_line: ax.axvline or ax.axhline)."""
    for g in plan.groups[1:]:
        first = next(i for i, b in enumerate(plan.blocks) if b.group == g)
        draw_line(first - 0.5, color="k", lw=1, ls="--")


def gate_heatmap(runrec, axes):
    """Fig. 1 at every epoch (top: each block's moving average of is_discarded) and each block's batch max|F|
    relative to ε (bottom, log scale: below 1 the gate shuts), blocks in network order from the top."""
    import matplotlib.colors as mcolors
    plan, records = runrec.plan, runrec.records
    names = plan.block_names
    epochs = [r["epoch"] for r in records]
    extent = (epochs[0] - 0.5, epochs[-1] + 0.5, len(names) - 0.5, -0.5)
    flags = np.array([[r["blocks"].get(n, {}).get("is_discarded", np.nan) for r in records] for n in names])
    top, bottom = axes
    shown = top.imshow(flags, aspect="auto", interpolation="nearest", extent=extent, vmin=0, vmax=1,
                       cmap=mcolors.LinearSegmentedColormap.from_list("gate", [KEPT_COLOR, DISCARDED_COLOR]))
    top.figure.colorbar(shown, ax=top, label="is_discarded (moving avg.)")
    ratio = np.array([[r["blocks"].get(n, {}).get("response_max", np.nan) / r["epsilon"]
                       if r.get("epsilon") else np.nan for r in records] for n in names])
    finite = ratio[np.isfinite(ratio) & (ratio > 0)]
    if finite.size:  # ε is 0 while the gates warm up: no ratio then
        spread = max(10.0, float(np.abs(np.log10(finite)).max()) if finite.size else 10.0)
        norm = mcolors.LogNorm(vmin=10 ** -min(spread, 3), vmax=10 ** min(spread, 3))
        shown = bottom.imshow(np.where(ratio > 0, ratio, np.nan), aspect="auto", interpolation="nearest",
                              extent=extent, norm=norm, cmap="RdBu")
        bottom.figure.colorbar(shown, ax=bottom, label="max|F| / ε (log)")
    for ax in axes:
        group_lines(plan, ax.axhline)
        for r in records:
            if r.get("lr_reset"):
                ax.axvline(r["epoch"], color="k", ls=":", lw=1)
        ax.set_ylabel("block (input at top)")
        ax.set_yticks([i for i, b in enumerate(plan.blocks) if b.index == 0] if len(names) > 30
                      else range(len(names)))
        ax.set_yticklabels([names[int(i)] for i in ax.get_yticks()], fontsize=7)
    top.set_title("Gate state of every block at every epoch (dotted: learning-rate resets)")
    bottom.set_title("Batch max|F| / ε (blue: above ε, gate open; red: below, gate shut)")
    bottom.set_xlabel("epoch")
    return flags, ratio


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
    titled(ax, "discard_ratio", "Discarded blocks over training (dotted: learning-rate resets)")
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
    titled(ax, "group_proportions", "Kept and discarded blocks per group")
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


PERCENTILES = ["min", "10%", "25%", "median", "75%", "90%", "max"]


def weight_collapse(runrec, ax, block=None):
    """Fig. 5: min, max and percentiles of a block's kernels against epochs; with a baseline, the same block of the
    plain run (min, median, max in grey) as the control: what weight decay alone does to weights that are used."""
    block = block or collapse_block(runrec)

    def percentiles(records):
        rows = [(r["epoch"], r["blocks"][block]["kernels"]["percentiles"]) for r in records if block in r["blocks"]]
        return ([e for e, _ in rows], np.array([p for _, p in rows])) if rows else ([], np.zeros((0, 7)))

    epochs, pct = percentiles(runrec.records)
    lines = []
    for i, name in enumerate(PERCENTILES):
        lines += ax.plot(epochs, pct[:, i], label=name, lw=2 if name in ("min", "max") else 1)
    control = []
    if runrec.baseline is not None:
        base_epochs, base = percentiles(runrec.baseline.records)
        for i, name in ((0, "min"), (3, "median"), (6, "max")):
            control += ax.plot(base_epochs, base[:, i], color="0.55", lw=1.5, ls="--",
                               label="plain run, same block (control)" if not control else None)
    first = next((r["epoch"] for r in runrec.records if block in runrec.discarded_at(r)), None)
    if first is not None:
        ax.axvline(first, color=DISCARDED_COLOR, ls=":", label="gate closed")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kernel weight")
    titled(ax, "weight_collapse", "Weights of %s against epochs%s" % (
        block, " (dashed grey: the plain run's %s)" % block if control else ""))
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    return lines, control


def responses(runrec, ax):
    """Each block's batch max|F| (moving average) at the last epoch against ε: how far each gate is from
    flipping, discarded blocks in red."""
    last = runrec.records[-1]
    gone = runrec.discarded_at(last)
    names = [n for n in runrec.plan.block_names if "response_max" in last["blocks"].get(n, {})]
    values = [max(last["blocks"][n]["response_max"], 1e-6) for n in names]
    bars = ax.bar(range(len(names)), values, width=0.8,
                  color=[DISCARDED_COLOR if n in gone else KEPT_COLOR for n in names])
    ax.set_yscale("log")
    if last.get("epsilon"):
        ax.axhline(last["epsilon"], color="k", lw=1.5, label="ε = %g" % last["epsilon"])
        ax.legend(loc="upper right")
    group_lines(runrec.plan, ax.axvline)
    ax.set_xlabel("block (input -> output)")
    ax.set_ylabel("batch max|F| (moving average, log)")
    titled(ax, "responses", "Residual responses at epoch %d against ε (red: discarded)" % last["epoch"])
    return bars


def error_curves(runrec, ax, export_report=None):
    """Validation error per epoch of the reduced network (what an export keeps), the gated network as training
    runs it, the plain run (baseline) and training error, on a log axis: the end values (a few tenths of a
    point apart) stay readable beside the early epochs' tens of points."""
    curves = [("val_error_reduced", runrec, "reduced network (blocks discarded so far removed)", "-o", KEPT_COLOR, 2),
              ("val_error", runrec, "plain network" if not runrec.gated else
               "gated network as trained (gates decided per batch)", "-" if runrec.gated else "-o",
               "0.6" if runrec.gated else KEPT_COLOR, 1),
              ("train_error", runrec, "training error (moving avg.)", ":", KEPT_COLOR, 1)]
    if runrec.baseline is not None:
        curves.append(("val_error", runrec.baseline, "plain run (baseline)", "--", PLAIN_COLOR, 1.5))
    plotted = [(source.series(key), label, style, color, width) for key, source, label, style, color, width in curves]
    positive = [100 * v for (_, values), *_ in plotted for v in values if v > 0]
    floor = min(positive) / 2 if positive else 0.01  # an error of 0 is drawn at the floor
    lines = []
    for (epochs, values), label, style, color, width in plotted:
        if epochs:
            lines += ax.plot(epochs, [max(100 * v, floor) for v in values], style, color=color, lw=width, ms=3,
                             label=label)
    if export_report and export_report.get("val_error_export") is not None and runrec.records:
        lines += ax.plot([runrec.records[-1]["epoch"]], [max(100 * export_report["val_error_export"], floor)], "*",
                         ms=12, color=DISCARDED_COLOR, label="export (report.json%s)" % (
                             ", BatchNorm re-estimated" if export_report.get("recomputed_bn") else ""))
    ax.set_yscale("log")
    ax.set_ylim(floor / 1.2, 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%, log)")
    ax.set_title("Validation error per epoch" + (": the reduced network is what an export keeps" if runrec.gated
                                                 else ""))
    if lines:
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    return lines


def draw(name: str, runrec: "RunRecords", export_report: Optional[dict] = None):
    """A matplotlib Figure of `name` (one of FIGURES)."""
    plt = pyplot()
    if name == "gate_heatmap":
        tall = min(16.0, 5 + len(runrec.plan.blocks) / 30)
        fig, axes = plt.subplots(2, 1, figsize=(10, tall), sharex=True)
        gate_heatmap(runrec, axes)
        fig.tight_layout()
        return fig
    fig, ax = plt.subplots(figsize=(10 if name in ("block_map", "responses") else 8,
                                    4 if name in ("block_map", "responses") else 5))
    if name == "block_map":
        block_map(runrec, ax, export_report)
    elif name == "discard_ratio":
        discard_ratio(runrec, ax)
    elif name == "group_proportions":
        group_proportions(runrec, ax)
    elif name == "weight_collapse":
        weight_collapse(runrec, ax)
    elif name == "responses":
        responses(runrec, ax)
    else:
        error_curves(runrec, ax, export_report)
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


def write_figures(logdir: str, out_dir: str, export_report: Optional[dict] = None, log=print,
                  baseline: Optional[str] = None) -> List[str]:
    """Draw every figure that the records support into out_dir (a folder of the run itself, or outside any run);
    returns the written paths. `baseline`: a plain run of the same network trained alike, the control."""
    runrec = RunRecords.load(logdir, baseline=check_baseline(baseline, logdir) if baseline else None)
    if runrec.unknown_blocks:
        log("warning: records name blocks not in plan.json (ignored): %s" % ", ".join(runrec.unknown_blocks))
    if runrec.baseline is not None and not runrec.baseline.records:
        log("warning: --baseline %s has no per-epoch kernel records (a plain run trained before they were written): "
            "the weight-collapse figure is drawn without its control" % baseline)
    out_dir = check_out(out_dir, own_run=logdir)
    names = [n for n in FIGURES if n not in GATED_FIGURES or runrec.gated]
    for name in (n for n in FIGURES if n not in names):
        log("skipping %s: no gate records (a plain run, or no finished epoch)" % name)
    with Staging(out_dir, "figures") as stage:
        for name in names:
            save_figure(draw(name, runrec, export_report), os.path.join(stage.path, name + ".png"))
    return [os.path.join(out_dir, name + ".png") for name in names]


def check_baseline(baseline: str, logdir: str) -> str:
    """`baseline` if it is a plain run of the network of `logdir`, else a UserError saying what to pass."""
    if not os.path.isfile(os.path.join(baseline, PLAN_FILE)):
        raise UserError("--baseline %s is not a training run (no %s); pass the --logdir of a plain run" % (baseline, PLAN_FILE))
    base = Run.open(baseline)
    mine, theirs = Run.open(logdir).plan, base.plan
    if mine.block_names != theirs.block_names or mine.image_size != theirs.image_size:
        raise UserError("--baseline %s trained another network (%s) than %s (%s); pass a plain run of the same "
                        "network" % (baseline, theirs.title, logdir, mine.title))
    if any(r.get("gated", True) for r in base.records(strict=False)):
        raise UserError("--baseline %s is an ε-ResNet run; pass a plain run (trained with --plain)" % baseline)
    return baseline


def read_export_report(export: str) -> dict:
    import json
    path = os.path.join(export, "report.json")
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError("--export %s: cannot read %s (%s); pass the --out folder of prune_export.py"
                        % (export, path, getattr(e, "strerror", None) or e))
    if not isinstance(report, dict):
        raise UserError("--export %s: %s is not an export report; pass the --out folder of prune_export.py" % (export, path))
    return report


def main(argv=None):
    import argparse
    listing = "\n".join("  %-23s %s" % (name + ".png", what) for name, what in FIGURES.items())
    p = argparse.ArgumentParser(prog="python -m eps_resnet.figures", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Draw the paper's figures (PNG) for a training log directory.",
                                epilog="figures (a plain run gets error_curves only):\n" + listing)
    p.add_argument("logdir", metavar="LOGDIR")
    p.add_argument("--out", metavar="DIR", default=None, help="where to write the PNGs (default: LOGDIR/figures)")
    p.add_argument("--baseline", metavar="PLAIN_LOGDIR", default=None,
                   help="a plain run of the same network trained alike: its error curve, and its same block as the "
                        "control of the weight-collapse figure")
    p.add_argument("--export", metavar="EXPORT_DIR", default=None,
                   help="the run's export (prune_export.py --out): its error in the block map and error curves")
    args = p.parse_args(argv)
    if not os.path.isdir(args.logdir):
        raise UserError("log directory %s does not exist; pass the --logdir of a training run" % args.logdir)
    report = read_export_report(args.export) if args.export else None
    out = os.path.join(args.logdir, "figures") if args.out is None else args.out
    for path in write_figures(args.logdir, out, report, baseline=args.baseline):
        print(path)
    return 0


def run():
    """The console script (pyproject.toml)."""
    from .guard import main_guard
    main_guard(main, interrupted="interrupted; no figures were written")


if __name__ == "__main__":
    run()
