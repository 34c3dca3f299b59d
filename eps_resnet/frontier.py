"""The ε frontier of one trained ε-ResNet: how much more could be removed, at what error, without training again.

    python -m eps_resnet.frontier LOGDIR --out DIR [--data DIR] [--max-error-increase P] [--recompute-bn N]

The paper leaves open how to find "a good ε value that produces maximum compression with marginal or no loss in
performance" (Sec. 6); its Fig. 8 needs one training run per ε. This command estimates the curve from one run:

1. One calibration pass of the gated model over the validation split gives each block's largest response max|F|.
2. The first point is the trained ε: the blocks below it are removed (prune_export's rule; same error).
3. For every larger ε' at which one more block falls below it (ε' is rounded up above that block's largest
   response), those blocks are removed as well and the reduced network is evaluated: with training's BatchNorm
   statistics, or with `--recompute-bn N` with statistics re-estimated for that network, as the export does.

What it estimates: a block removed above the trained ε had responses that were not zero, so removing it changes
the function the network computes; the point's error is measured, not guaranteed by training. A retraining at
the chosen ε (`--load LOGDIR -e ε'`, printed) lets the network adapt; `prune_export.py --epsilon ε'` exports
a point as it is.

Choosing honestly: the validation images are split by position into a "select" half (even positions) and a
"check" half (odd positions). `--max-error-increase P` picks the largest ε whose select-half error is within P
points of the trained network's select-half error; the check half, whose labels took no part in the choice,
tells whether the bound holds on images the choice did not see. (The removal order uses the responses of every
image, not their labels.)

DIR gets frontier.json (the points, sorted by ε), frontier.md (the table) and frontier.png (compression and
error against ε).
"""
import argparse
import json
import math
import os
import shlex
import tempfile
from typing import Dict, List, Optional

import numpy as np
from tabulate import tabulate

from . import UserError
from .commands import number, training_command
from .fileio import atomic_write_text
from .inference import BuiltNetwork
from .figures import pyplot, save_figure
from .export_request import check_calib_batches, check_recompute_bn
from .prune import calibrate, calibration_images, load_run, network_logits, reestimate_bn
from .outputs import Staging, check_out

def epsilon_above(value: float, below: Optional[float] = None) -> float:
    """A short number just above `value` (rounded up to 2, 3, ... significant digits) and below `below`: the ε at
    which a block whose largest response is `value` is removed and the next one (largest response `below`) is not."""
    if value <= 0:
        return float(np.nextafter(np.float32(0), np.float32(1)))
    for digits in range(2, 8):
        step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
        candidate = float("%.*g" % (digits + 1, math.floor(value / step + 1) * step))
        if candidate > value and (below is None or candidate < below):
            return candidate
    return float(np.nextafter(value, math.inf))


def frontier_points(largest: Dict[str, float], trained_epsilon: float) -> List[dict]:
    """[(ε, removed block names)] in increasing ε: first the trained ε, then one point per further block removed.

    `largest`: each gated block's largest response on the held-out images. Blocks with equal responses go together."""
    removed = sorted(b for b, m in largest.items() if m < trained_epsilon)
    points = [{"epsilon": trained_epsilon, "removed": list(removed)}]
    rest = sorted((m, b) for b, m in largest.items() if b not in removed)
    i = 0
    while i < len(rest):
        m = rest[i][0]
        while i < len(rest) and rest[i][0] == m:
            removed.append(rest[i][1])
            i += 1
        points.append({"epsilon": epsilon_above(m, rest[i][0] if i < len(rest) else None), "removed": sorted(removed)})
    return points


def compute_frontier(logdir: str, data_dir: Optional[str] = None, checkpoint: Optional[str] = None,
                     calib_batches: Optional[int] = None, max_error_increase: Optional[float] = None,
                     recompute_bn: int = 0, log=print) -> dict:
    """The frontier of the run in `logdir` as a dict (what frontier.json holds). `recompute_bn` > 0 evaluates each
    point's reduced network with BatchNorm statistics re-estimated on that many training batches of 64, as
    `prune_export.py --recompute-bn` exports it (docs/FIDELITY.md, "Beyond the paper")."""
    check_recompute_bn(recompute_bn)
    check_calib_batches(calib_batches)
    run = load_run(logdir, checkpoint)
    if not run.gated:
        raise UserError("%s is a plain ResNet run (no gates, no ε); the frontier needs an ε-ResNet run" % logdir)
    images, labels = calibration_images(run, data_dir, calib_batches)
    select = np.arange(len(images)) % 2 == 0
    if select.sum() < 1 or (~select).sum() < 1:
        raise UserError("the frontier needs at least 2 validation images, found %d" % len(images))
    log("calibration: %d held-out images (%d select, %d check), checkpoint %s"
        % (len(images), select.sum(), (~select).sum(), os.path.basename(run.checkpoint)))
    calibration = calibrate(run, images)
    trained = calibration.epsilon
    largest = {b: float(v.max()) for b, v in calibration.maxima.items()}
    points = frontier_points(largest, trained)  # the first: prune_export's rule at the trained ε
    plan = run.plan
    rows = []
    # one graph for every point (the blocks to remove are an input); re-estimated statistics need each its own
    switchable = None if recompute_bn else BuiltNetwork(plan, run.checkpoint, image_shape=images.shape[1:],
                                                        switchable=True)
    for p in points:
        reduced = plan.without(p["removed"])
        if recompute_bn:
            with tempfile.TemporaryDirectory() as tmp:
                weights = os.path.join(tmp, "reduced")
                reestimate_bn(reduced, run, data_dir, recompute_bn, weights)
                wrong = network_logits(reduced, weights, images).argmax(1) != labels
        else:
            wrong = switchable.logits(images, removed=p["removed"]).argmax(1) != labels
        rows.append({"epsilon": p["epsilon"], "blocks_removed": len(p["removed"]), "removed_blocks": p["removed"],
                     "layers_after": reduced.depth, "params_after": reduced.num_params, "flops_after": reduced.flops,
                     "compression_ratio": plan.full_depth / reduced.depth,
                     "val_error": float(wrong.mean()), "val_error_select": float(wrong[select].mean()),
                     "val_error_check": float(wrong[~select].mean())})
        log("ε %-9g %2d of %d blocks removed, %3d layers: validation error %.2f%% (select %.2f%%, check %.2f%%)"
            % (p["epsilon"], len(p["removed"]), len(plan.blocks), reduced.depth, 100 * rows[-1]["val_error"],
               100 * rows[-1]["val_error_select"], 100 * rows[-1]["val_error_check"]))
    if switchable:
        switchable.close()
    for r in rows:
        r["error_change"] = 100 * (r["val_error"] - rows[0]["val_error"])
    result = {"logdir": os.path.abspath(logdir), "checkpoint": run.checkpoint, "dataset": run.recipe["dataset"],
              "trained_epsilon": trained, "blocks": len(plan.blocks), "layers_before": plan.full_depth,
              "params_before": plan.num_params, "images": int(len(images)), "select_images": int(select.sum()),
              "check_images": int((~select).sum()),
              "val_error_gated": float(np.mean(calibration.logits.argmax(1) != labels)), "recompute_bn": recompute_bn,
              "largest_response": largest, "points": rows}
    if max_error_increase is not None:
        # the export and the retraining printed with it read what this frontier read
        same_input = (["--checkpoint", run.checkpoint] if checkpoint else []) + (["--data", data_dir] if data_dir else [])
        same_input += (["--calib-batches", str(calib_batches)] if calib_batches else [])
        same_input += (["--recompute-bn", str(recompute_bn)] if recompute_bn else [])
        result["suggestion"] = suggest(rows, max_error_increase, run, same_input, data_dir)
    return result


def suggest(rows: List[dict], max_error_increase: float, run, export_flags=(), data_dir: Optional[str] = None) -> dict:
    """The largest ε whose select-half error is within `max_error_increase` points of the trained network's, and
    whether the check half (not used to choose) keeps the bound; the commands that retrain and export at it
    (`export_flags`: the checkpoint, data and calibration flags the frontier was given)."""
    bound = rows[0]["val_error_select"] + max_error_increase / 100.0
    chosen = [r for r in rows if r["val_error_select"] <= bound + 1e-12][-1]  # the first point always qualifies
    check_increase = 100 * (chosen["val_error_check"] - rows[0]["val_error_check"])
    retrain = retrain_command(run, chosen["epsilon"], data_dir)
    return {"max_error_increase": max_error_increase, "epsilon": chosen["epsilon"],
            "blocks_removed": chosen["blocks_removed"], "layers_after": chosen["layers_after"],
            "select_increase": 100 * (chosen["val_error_select"] - rows[0]["val_error_select"]),
            "check_increase": check_increase, "holds_on_check": check_increase <= max_error_increase + 1e-9,
            "retrain_command": str(retrain), "retrain_note": retrain.note(),
            "export_command": " ".join(shlex.quote(a) for a in ["python", "prune_export.py", run.logdir, "--out",
                                                                  "EXPORT_DIR", "--epsilon", number(chosen["epsilon"])]
                                       + list(export_flags))}


def retrain_command(run, epsilon: float, data_dir: Optional[str] = None):
    """The command that retrains the run's network at `epsilon` from its weights (the checkpoint the frontier
    read), with the run's own settings."""
    changes = {"data_dir": data_dir} if data_dir else {}
    return training_command(run.recipe, epsilon=epsilon, epsilon_start_epoch=0, resume=False, epsilon_tolerance=None,
                            holdout=0,
                            load=run.checkpoint if run.requested else run.logdir,
                            logdir="%s-eps%s" % (run.logdir.rstrip(os.sep), number(epsilon)), **changes)


def frontier_table(result: dict) -> str:
    rows = [["%g" % p["epsilon"] + (" (trained)" if i == 0 else ""), "%d / %d" % (p["blocks_removed"], result["blocks"]),
             p["layers_after"], "%.2f" % p["compression_ratio"], "%.3f M" % (p["params_after"] / 1e6),
             "%.2f%%" % (100 * p["val_error"]), "%+.2f" % p["error_change"], "%.2f%%" % (100 * p["val_error_select"]),
             "%.2f%%" % (100 * p["val_error_check"])] for i, p in enumerate(result["points"])]
    return tabulate(rows, headers=["ε", "removed", "layers", "compression", "parameters", "val. error",
                                   "change (points)", "select half", "check half"])


def suggestion_lines(result: dict) -> List[str]:
    s = result.get("suggestion")
    if not s:
        return []
    head = ("largest ε within %g points of the trained network's error on the select half: ε %g (%d blocks removed, "
            "%d layers; select half %+.2f points)" % (s["max_error_increase"], s["epsilon"], s["blocks_removed"],
                                                      s["layers_after"], s["select_increase"]))
    if s["epsilon"] == result["trained_epsilon"]:
        return [head, "the trained ε itself: every larger ε costs more than %g points; export the run as it is "
                      "(prune_export.py without --epsilon)" % s["max_error_increase"]]
    return [head, "on the check half, which took no part in the choice: %+.2f points, %s" % (
                s["check_increase"], "within the bound" if s["holds_on_check"] else "BEYOND the bound"),
            "an estimate: removing blocks whose responses were not zero changes the function. Confirm by retraining "
            "with the run's own settings (its run.json)%s:" % ("; " + s["retrain_note"] if s.get("retrain_note") else ""),
            "  " + s["retrain_command"],
            "or export this point as it is:", "  " + s["export_command"]]


def statistics_line(result: dict) -> str:
    n = result.get("recompute_bn", 0)
    if n:
        return "BatchNorm statistics re-estimated for each point's network on %d training images" % (64 * n)
    return "BatchNorm statistics: training's moving averages (--recompute-bn N re-estimates them, as the export can)"


def frontier_markdown(result: dict) -> str:
    lines = ["# ε frontier of %s" % result["logdir"], "",
             "Trained ε %g, %d held-out images (select half %d, check half %d), gated model's error %.2f%%. %s."
             % (result["trained_epsilon"], result["images"], result["select_images"], result["check_images"],
                100 * result["val_error_gated"], statistics_line(result)), "", "```", frontier_table(result), "```", ""]
    extra = suggestion_lines(result)
    if extra:
        lines += ["```"] + extra + ["```", ""]
    return "\n".join(lines)


def frontier_figure(result: dict):
    """Compression and validation error against ε (the form of the paper's Fig. 8, from one run)."""
    plt = pyplot()
    pts = result["points"]
    eps = [p["epsilon"] for p in pts]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    top.step(eps, [p["compression_ratio"] for p in pts], where="post", marker="o", color="#1f77b4")
    top.set_ylabel("compression (layers before / after)")
    top.set_title("ε frontier of one run: %s" % os.path.basename(result["logdir"].rstrip(os.sep)))
    for key, label, style in (("val_error", "all %d images" % result["images"], "-"),
                              ("val_error_select", "select half (chooses)", "--"),
                              ("val_error_check", "check half (not used to choose)", ":")):
        bottom.plot(eps, [100 * p[key] for p in pts], style, marker="o", drawstyle="steps-post", label=label)
    bottom.set_ylabel("validation error (%)")
    bottom.set_xlabel("ε (blocks whose largest held-out response is below ε are removed)")
    for ax in (top, bottom):
        ax.axvline(result["trained_epsilon"], color="k", ls="--", lw=1)
        if result.get("suggestion"):
            ax.axvline(result["suggestion"]["epsilon"], color="#2ca02c", ls=":", lw=1.5)
        ax.grid(alpha=0.3)
    top.text(result["trained_epsilon"], top.get_ylim()[1], " trained ε", va="top", fontsize=9)
    if result.get("suggestion"):
        top.text(result["suggestion"]["epsilon"], top.get_ylim()[0], " suggested ε", va="bottom", fontsize=9,
                 color="#2ca02c")
    bottom.legend(loc="center right", fontsize=9)
    fig.tight_layout()
    return fig


def write_frontier(result: dict, out: str) -> List[str]:
    names = ("frontier.json", "frontier.md", "frontier.png")
    with Staging(out, "frontier") as stage:
        folder = stage.path
        atomic_write_text(os.path.join(folder, names[0]), json.dumps(result, indent=1) + "\n")
        atomic_write_text(os.path.join(folder, names[1]), frontier_markdown(result))
        save_figure(frontier_figure(result), os.path.join(folder, names[2]))
    return [os.path.join(out, name) for name in names]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eps_resnet.frontier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdir", metavar="LOGDIR", help="log directory of an ε-ResNet training run")
    p.add_argument("--out", metavar="DIR", required=True, help="where to write frontier.json, frontier.md, frontier.png")
    from .cli import add_checkpoint_data_flags
    add_checkpoint_data_flags(p)
    p.add_argument("--max-error-increase", type=float, default=None, metavar="P",
                   help="suggest the largest ε within P percentage points of the trained network's error")
    p.add_argument("--recompute-bn", type=int, default=0, metavar="N",
                   help="evaluate each point with its reduced network's BatchNorm statistics re-estimated on N batches "
                        "of 64 training images, as prune_export.py --recompute-bn N exports it (default 0: keep "
                        "training's moving averages)")
    args = p.parse_args(argv)
    out = check_out(args.out)  # before the computation: a wrong --out fails at once
    if args.max_error_increase is not None and not args.max_error_increase >= 0:
        raise UserError("--max-error-increase must be >= 0 percentage points, got %r" % args.max_error_increase)
    from .prune import quiet_layer_logs
    quiet_layer_logs()
    result = compute_frontier(args.logdir, args.data, args.checkpoint, args.calib_batches,
                              args.max_error_increase, args.recompute_bn)
    paths = write_frontier(result, out)
    print(statistics_line(result))
    print(frontier_table(result))
    for line in suggestion_lines(result):
        print(line)
    print("wrote %s" % ", ".join(paths))
    return 0


def run():
    """The console script (pyproject.toml)."""
    from .guard import main_guard
    main_guard(main, interrupted="interrupted; nothing was written")


if __name__ == "__main__":
    run()
