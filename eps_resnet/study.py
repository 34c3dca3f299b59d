"""Compare finished runs across depths and ε, in the form of the paper's Figs. 6, 7 and 8.

    python -m eps_resnet.study LOGDIR [LOGDIR ...] --out DIR

Reads each run's own files (run.json, plan.json, stats.json, discards.jsonl) and writes DIR/study.json (one row
per run), DIR/study.md (the table) and PNG figures:
    fig6_depth.png     validation error against depth, plain vs ε-ResNet; discard ratio against depth
    fig7_memory.png    parameter memory against depth, full network vs the reduced one
    fig8_epsilon.png   discard ratio and validation error against ε (plain runs as dashed lines)

"Before" is the trained network's plan; "after" removes the blocks whose moving average of is_discarded had
reached 0.99 in the run's last discard record (rundir.DISCARD_RULES "average": the network training validates
every epoch; prune_export decides by calibration, or with --criterion ema by the released rule, exactly 1).
val_error is the run's last validation error of that reduced network (`val_error_reduced`; runs written before
it existed, and plain runs, give their `val_error`, and `val_error_of` says which); an ε-ResNet's
`val_error_gated` is the gated model's, gates decided per batch. Runs of the same data set, depth and ε (other
seeds) are averaged in the figures and listed one by one in the table.
"""
import argparse
import json
import os
from collections import defaultdict
from typing import Dict, List, Optional

from . import UserError
from .fileio import atomic_write_text
from .figures import pyplot, save_figure
from .outputs import Staging, check_out
from .rundir import DISCARD_RULES, Run, last_record_per_epoch

FIGURES = ("fig6_depth", "fig7_memory", "fig8_epsilon")
BYTES_PER_PARAMETER = 4  # float32


def summarize_run(logdir: str) -> dict:
    """One study row for the run in `logdir` (a UserError names what is missing)."""
    run = Run.open(logdir)
    plan, recipe = run.plan, run.recipe
    validated = [s for s in run.stats() if s.get("val_error") is not None]
    if not validated:
        raise UserError("%s has no validation result in stats.json; let the run finish at least one epoch" % logdir)
    gated = recipe.get("epsilon") is not None
    records = last_record_per_epoch(run.records(strict=False)) if gated else []
    discarded = run.discarded(records[-1] if records else None)
    reduced = plan.without(discarded)
    epoch = int(validated[-1].get("epoch_num", len(validated)))
    max_epoch = recipe.get("max_epoch")
    return {"logdir": os.path.abspath(logdir), "dataset": recipe["dataset"], "depth": plan.full_depth,
            "epsilon": (run.epsilon or 0.0) if gated else None,  # -e auto before its choice: 0
            "epochs": epoch, "finished": max_epoch is None or epoch >= max_epoch,
            **_errors(validated[-1], gated),
            "layers_before": plan.full_depth, "layers_after": reduced.depth,
            "params_before": plan.num_params, "params_after": reduced.num_params,
            "gated_blocks": len(plan.blocks) if gated else 0, "discarded": discarded,
            "discarded_ratio_per_group": {str(g): (sum(b.name in discarded for b in plan.blocks_in_group(g))
                                                   / len(plan.blocks_in_group(g))) for g in plan.groups},
            "discarded_ratio": len(discarded) / len(plan.blocks) if gated and plan.blocks else 0.0}


def _errors(stats: dict, gated: bool) -> dict:
    """The error a row leads with: the reduced network's where training measured it."""
    reduced = stats.get("val_error_reduced")
    errors = {"val_error": float(stats["val_error"] if reduced is None else reduced),
              "val_error_of": "network" if not gated else "gated model" if reduced is None else "reduced network"}
    if gated:
        errors["val_error_gated"] = float(stats["val_error"])
    return errors


def study_table(rows: List[dict]) -> str:
    from tabulate import tabulate
    table = []
    for r in sorted(rows, key=_order):
        table.append([r["dataset"], r["depth"], "plain" if r["epsilon"] is None else "%g" % r["epsilon"],
                      "%.2f" % (100 * r["val_error"]), "%d -> %d" % (r["layers_before"], r["layers_after"]),
                      "%.3f -> %.3f" % (r["params_before"] / 1e6, r["params_after"] / 1e6),
                      "-" if r["epsilon"] is None else "%d / %d (%.2f)" % (len(r["discarded"]), r["gated_blocks"],
                                                                           r["discarded_ratio"]),
                      "-" if r["epsilon"] is None else " ".join("%.2f" % v for v in
                                                                r["discarded_ratio_per_group"].values()),
                      "%d%s" % (r["epochs"], "" if r["finished"] else " (unfinished)"), os.path.basename(r["logdir"])])
    return tabulate(table, headers=["data set", "depth", "ε", "val. error %", "layers", "parameters (M)",
                                    "discarded (ratio)", "per group", "epochs", "run"])


def comparison_lines(rows: List[dict]) -> List[str]:
    """Per data set and depth: each ε-ResNet's mean error and discard ratio against the plain runs' mean error."""
    lines = []
    for (dataset, depth), group in sorted(_by(rows, lambda r: (r["dataset"], r["depth"])).items()):
        plain = [r["val_error"] for r in group if r["epsilon"] is None]
        for eps, runs in sorted(_by([r for r in group if r["epsilon"] is not None], lambda r: r["epsilon"]).items()):
            error = _mean([r["val_error"] for r in runs])
            text = "%s, depth %d, ε %g (%d run%s): %.2f%% error, %.0f%% of blocks discarded, %d -> %.0f layers" % (
                dataset, depth, eps, len(runs), "" if len(runs) == 1 else "s", 100 * error,
                100 * _mean([r["discarded_ratio"] for r in runs]), depth, _mean([r["layers_after"] for r in runs]))
            if plain:
                text += "; plain %.2f%% (%+.2f points)" % (100 * _mean(plain), 100 * (error - _mean(plain)))
            lines.append("- " + text)
    return lines


def study_markdown(rows: List[dict], figures: List[str]) -> str:
    lines = ["# Study of %d runs" % len(rows), "", "```", study_table(rows), "```", ""]
    comparisons = comparison_lines(rows)
    if comparisons:
        lines += ["ε-ResNet against the plain ResNet of the same depth (means over runs):", ""] + comparisons + [""]
    lines += ["\"after\": without the blocks whose moving average of is_discarded reached %g in the run's last discard "
              "record; validation error: the run's last validation of that reduced network (of the gated model for runs "
              "older than that measure, column val_error_of of study.json)." % DISCARD_RULES["average"], ""]
    lines += ["![%s](%s)" % (f, f) for f in figures]
    return "\n".join(lines) + "\n"


# ---- figures ---------------------------------------------------------------------------------------------------
def _series(rows, x_key, y_key, key):
    """{series key: ([x], [mean y])} over rows, grouped by key(row) then by x."""
    out = {}
    for k, group in sorted(_by(rows, key).items(), key=lambda kv: str(kv[0])):
        by_x = _by(group, lambda r: r[x_key])
        xs = sorted(by_x)
        out[k] = (xs, [_mean([y_key(r) for r in by_x[x]]) for x in xs])
    return out


def _label(rows, dataset, text):
    return text if len({r["dataset"] for r in rows}) == 1 else "%s, %s" % (dataset, text)


def _variant(r):
    return (r["dataset"], r["epsilon"] if r["epsilon"] is not None else -1.0)


def _variant_label(rows, key):
    dataset, eps = key
    return _label(rows, dataset, "plain ResNet" if eps < 0 else "ε-ResNet, ε %g" % eps)


def fig6_depth(rows, plt):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {}
    for key, (xs, ys) in _series(rows, "depth", lambda r: 100 * r["val_error"], _variant).items():
        colors[key] = ax1.plot(xs, ys, "--s" if key[1] < 0 else "-o", label=_variant_label(rows, key))[0].get_color()
    ax1.set_xlabel("depth (layers)")
    ax1.set_ylabel("validation error (%)")
    ax1.set_title("(a) validation error against depth")
    ax1.legend(fontsize=8)
    gated = [r for r in rows if r["epsilon"] is not None]
    for key, (xs, ys) in _series(gated, "depth", lambda r: r["discarded_ratio"], _variant).items():
        ax2.plot(xs, ys, "-o", color=colors[key], label=_variant_label(rows, key))  # the same colour as in (a)
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("depth (layers)")
    ax2.set_ylabel("ratio of discarded blocks")
    ax2.set_title("(b) discarded blocks against depth" + ("" if gated else " (no ε-ResNet runs)"))
    if gated:
        ax2.legend(fontsize=8)
    return fig


def fig7_memory(rows, plt):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mb = BYTES_PER_PARAMETER / 1e6
    full = _series(rows, "depth", lambda r: r["params_before"] * mb, lambda r: r["dataset"])
    for dataset, (xs, ys) in full.items():
        ax.plot(xs, ys, "--s", color="k", label=_label(rows, dataset, "full network"))
    gated = [r for r in rows if r["epsilon"] is not None]
    for key, (xs, ys) in _series(gated, "depth", lambda r: r["params_after"] * mb, _variant).items():
        ax.plot(xs, ys, "-o", label=_variant_label(rows, key).replace("ε-ResNet", "reduced ε-ResNet"))
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("parameter memory (MB, float32)")
    ax.set_title("Parameter memory against depth: full vs reduced")
    ax.legend(fontsize=8)
    return fig


def fig8_epsilon(rows, plt):
    gated = [r for r in rows if r["epsilon"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    per_depth = lambda r: (r["dataset"], r["depth"])  # noqa: E731
    label = lambda key: _label(rows, key[0], "depth %d" % key[1])  # noqa: E731
    for key, (xs, ys) in _series(gated, "epsilon", lambda r: r["discarded_ratio"], per_depth).items():
        ax1.plot(xs, ys, "-o", label=label(key))
    lines = {}
    for key, (xs, ys) in _series(gated, "epsilon", lambda r: 100 * r["val_error"], per_depth).items():
        lines[key] = ax2.plot(xs, ys, "-o", label=label(key))[0]
    for key, group in sorted(_by([r for r in rows if r["epsilon"] is None], per_depth).items()):
        color = lines[key].get_color() if key in lines else None
        ax2.axhline(100 * _mean([r["val_error"] for r in group]), ls="--", lw=1, color=color,
                    label=label(key) + ", plain")
    values = sorted({r["epsilon"] for r in gated if r["epsilon"] > 0})
    for ax in (ax1, ax2):
        ax.set_xlabel("ε")
        if len(values) > 1 and values[-1] / values[0] > 100:
            ax.set_xscale("log")  # ε of the paper's scale next to tiny or huge test values
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("ratio of discarded blocks")
    ax1.set_title("(a) discarded blocks against ε" + ("" if gated else " (no ε-ResNet runs)"))
    ax2.set_ylabel("validation error (%)")
    ax2.set_title("(b) validation error against ε (dashed: plain)")
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def write_study(logdirs: List[str], out: str, log=print) -> dict:
    """Rows for `logdirs`, and study.json, study.md and the figures in `out`; returns {"rows", "files"}."""
    if not logdirs:
        raise UserError("no log directories given; pass the --logdir of each finished run")
    out = check_out(out)
    rows = [summarize_run(d) for d in logdirs]
    for r in rows:
        if not r["finished"]:
            log("warning: %s stopped at epoch %d of its %s; it is included as it is"
                % (r["logdir"], r["epochs"], "run"))
    plt = pyplot()
    names = [name + ".png" for name in FIGURES] + ["study.json", "study.md"]
    with Staging(out, "study") as stage:
        for name in FIGURES:
            fig = globals()[name](rows, plt)
            fig.tight_layout()
            save_figure(fig, os.path.join(stage.path, name + ".png"))
        atomic_write_text(os.path.join(stage.path, "study.json"), json.dumps(rows, indent=1) + "\n")
        atomic_write_text(os.path.join(stage.path, "study.md"), study_markdown(rows, names[:len(FIGURES)]))
    written = [os.path.join(out, name) for name in names]
    return {"rows": rows, "files": written}


def _by(rows, key) -> Dict:
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return dict(groups)


def _mean(values):
    return sum(values) / len(values)


def _order(r):
    return (r["dataset"], r["depth"], -1.0 if r["epsilon"] is None else r["epsilon"], r["logdir"])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eps_resnet.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdirs", metavar="LOGDIR", nargs="+", help="log directories of finished runs (plain or ε)")
    p.add_argument("--out", metavar="DIR", required=True, help="where to write study.json, study.md and the figures")
    args = p.parse_args(argv)
    result = write_study(args.logdirs, args.out)
    print(study_table(result["rows"]))
    for line in comparison_lines(result["rows"]):
        print(line)
    print("wrote %s" % ", ".join(result["files"]))
    return 0


def run():
    """The console script (pyproject.toml)."""
    from .guard import main_guard
    main_guard(main, interrupted="interrupted; nothing was written")


if __name__ == "__main__":
    run()
