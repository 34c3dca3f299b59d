"""Blocks, channels or both: `python -m eps_resnet.compare` (`make compare`).

For each seed, trains the plain ResNet, the ε-ResNet (ε chosen during training, -e auto), the channel regulariser
(eps_resnet.channels) and both in one run, two at a time, on the bundled digits (or CIFAR-10, CIFAR-100 or SVHN
with --dataset and --data; --methods picks fewer of the four); exports each as the demo does (BatchNorm
statistics re-estimated, the seed's plain run as baseline), and writes comparison.md, comparison.json and
comparison.png: validation error against parameters and against the export's measured CPU latency at batch 1 and
64, the mean and the range over seeds, with the command, commit and settings that made them.

    OUT/runs/<method>-seed<S>       the training runs
    OUT/exports/<method>-seed<S>    their exports (report.md)
    OUT/comparison.{md,json,png}    also written to --docs DIR when given
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
from typing import List, Optional

from . import UserError
from .fileio import atomic_write_text
from .guard import run_stage, start_stage
from .export_request import check_recompute_bn
from .methods import check_channel_threshold

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNEL_PENALTY = "0.01"  # on the digits: 97-98% of ResNet-32's parameters removed at the plain error (README)
METHODS = {  # name -> (label, training flags)
    "plain": ("plain ResNet", ["--plain"]),
    "eps": ("ε-ResNet (-e auto)", ["-e", "auto"]),
    "channels": ("channels", ["--plain", "--channel-penalty", CHANNEL_PENALTY]),
    "both": ("ε-ResNet + channels", ["-e", "auto", "--channel-penalty", CHANNEL_PENALTY]),
}
FILES = ("comparison.md", "comparison.json", "comparison.png")


def cifar_style_datasets() -> List[str]:
    from .data import DATASETS
    return [name for name, info in DATASETS.items() if info.style == "cifar"]


def parse_methods(text: str) -> List[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise UserError("--methods takes distinct names from %s, comma-separated; got %r" % (",".join(METHODS), text))
    if any(m != "plain" for m in methods) and "plain" not in methods:
        raise UserError("--methods %s: every export is measured against the plain run of its seed; add plain" % text)
    return [m for m in METHODS if m in methods]  # the table's order


def training_script(dataset: str, data: Optional[str]) -> List[str]:
    """The training command line's script and data flags for `dataset` (the registry's train_command)."""
    from .data import dataset_info
    info = dataset_info(dataset)
    if info.needs_data_dir and not data:
        raise UserError("--dataset %s needs --data DIR (the folder that holds its files)" % dataset)
    if data and not info.needs_data_dir:
        raise UserError("--dataset %s ships with a package and reads no --data; drop --data, or choose %s"
                        % (dataset, ", ".join(d for d in cifar_style_datasets() if d != dataset)))
    if data:
        from .data import require_data_dir
        require_data_dir(data, dataset)
    script, *flags = info.train_command.split()
    return [os.path.join(ROOT, script)] + flags + (["--data", data] if data else [])


def parse_seeds(text: str) -> List[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError("--seeds takes comma-separated integers, e.g. 1,2,3; got %r" % text)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError("--seeds takes distinct integers >= 0, e.g. 1,2,3; got %r" % text)
    return seeds


def run_two_at_a_time(jobs: List[tuple], log=print):
    """Each job (title, argv, log file) as a stage of this command, two side by side (a small run keeps about one
    of two cores busy); a failed job ends the comparison with its log named."""
    for i in range(0, len(jobs), 2):
        pair = jobs[i:i + 2]
        for title, _, path in pair:
            log("  %s (log: %s)" % (title, path))
        outs = [open(path, "w") for _, _, path in pair]
        try:
            with start_stage(pair[0][1], cwd=ROOT, stdout=outs[0], stderr=subprocess.STDOUT) as first:
                second = run_stage(pair[1][1], cwd=ROOT, stdout=outs[1], stderr=subprocess.STDOUT) \
                    if len(pair) > 1 else 0
                codes = [first.wait(), second]
        finally:
            for f in outs:
                f.close()
        for (title, _, path), code in zip(pair, codes):
            if code:
                raise UserError("%s failed (exit code %d%s); its log is %s" % (title, code, last_error(path), path))


def last_error(log_path: str) -> str:
    """The failed command's own `error:` line, if its log has one."""
    try:
        with open(log_path, errors="replace") as f:
            errors = [line.strip() for line in f if line.startswith("error:")]
    except OSError:
        return ""
    return ": " + errors[-1][len("error:"):].strip() if errors else ""


def row_of(method: str, seed: int, export_dir: str) -> dict:
    r = json.load(open(os.path.join(export_dir, "report.json")))
    channels = r.get("channels") or {}
    return {"method": method, "seed": seed, "export": export_dir, "error": r["val_error_export"],
            "plain_error": r.get("baseline_val_error"), "params": r["params_after"], "params_full": r["params_before"],
            "flops": r["flops_after"], "latency_b1_ms": r["latency_b1"]["export_ms"],
            "latency_b64_ms": r["latency_b64"]["export_ms"], "blocks_removed": len(r["discarded"]),
            "blocks": len(r["evidence"]), "epsilon": r.get("epsilon"), "channels_removed": channels.get("removed", 0),
            "channel_slots": channels.get("slots")}


def summary_table(rows: List[dict]) -> str:
    """Per method: mean [min, max] over seeds."""
    from tabulate import tabulate

    def spread(values, fmt):
        return (fmt + " [" + fmt + ", " + fmt + "]") % (sum(values) / len(values), min(values), max(values))
    out = []
    for method, (label, _) in METHODS.items():
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        out.append([label, len(mine), spread([100 * r["error"] for r in mine], "%.2f%%"),
                    spread([r["params"] / 1e3 for r in mine], "%.1f k"),
                    spread([100 * (1 - r["params"] / r["params_full"]) for r in mine], "%.1f%%"),
                    spread([r["latency_b1_ms"] for r in mine], "%.2f"), spread([r["latency_b64_ms"] for r in mine], "%.1f"),
                    spread([r["blocks_removed"] for r in mine], "%.1f")])
    return tabulate(out, headers=["method", "seeds", "validation error", "parameters", "parameters removed",
                                  "ms, batch 1", "ms, batch 64", "blocks removed"])


def run_table(rows: List[dict]) -> str:
    from tabulate import tabulate
    return tabulate([[METHODS[r["method"]][0], r["seed"], "%.2f%%" % (100 * r["error"]),
                      "-" if r["plain_error"] is None else "%+.2f" % (100 * (r["error"] - r["plain_error"])),
                      "%d of %d" % (r["blocks_removed"], r["blocks"]),
                      "-" if not r["channel_slots"] else "%d of %d" % (r["channels_removed"], r["channel_slots"]),
                      "%.1f k" % (r["params"] / 1e3), "%.2f" % r["latency_b1_ms"], "%.1f" % r["latency_b64_ms"]]
                     for r in rows],
                    headers=["method", "seed", "error", "vs plain (points)", "blocks removed", "channel slots removed",
                             "parameters", "ms, batch 1", "ms, batch 64"])


def draw(rows: List[dict], path: str):
    from .figures import pyplot, save_figure
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, title) in zip(axes, (("params", "parameters"), ("latency_b1_ms", "CPU latency, batch 1 (ms)"),
                                       ("latency_b64_ms", "CPU latency, batch 64 (ms)"))):
        for method, (label, _) in METHODS.items():
            mine = [r for r in rows if r["method"] == method]
            if mine:
                ax.scatter([r[key] for r in mine], [100 * r["error"] for r in mine], label=label, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(title + ", log scale")
        ax.set_ylabel("validation error of the export (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9)
    fig.suptitle("Blocks, channels or both: one point per seed")
    fig.tight_layout()
    save_figure(fig, path)


def markdown(rows: List[dict], settings: dict) -> str:
    return "\n".join([
        "# Blocks, channels or both", "",
        "Made by `%s` at commit %s; training flags %s, export flags %s, seeds %s." % (
            settings["command"], settings["commit"], settings["train"], settings["export"],
            ",".join(map(str, settings["seeds"]))), "",
        "Each method's export (verified against the network it keeps) on the data set's validation split; the "
        "latency is the export's, measured on this machine's CPU beside the trained network. Mean [min, max] over "
        "seeds:", "", "```", summary_table(rows), "```", "", "Every run:", "", "```", run_table(rows), "```", "",
        "![validation error against parameters and latency](comparison.png)", ""])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def compare(out: str, seeds: List[int], dataset: str, data: Optional[str], train_args: List[str], recompute_bn: int,
            channel_threshold: Optional[str], docs: Optional[str], command: str, methods: List[str] = tuple(METHODS),
            log=print) -> List[dict]:
    if os.path.exists(out):
        raise UserError("%s already exists; the comparison writes a new directory: choose another --out" % out)
    # the runs and exports start in the project's folder: every path they get is absolute
    out, data = os.path.abspath(out), data and os.path.abspath(data)
    script = training_script(dataset, data)
    commit = git_commit()  # the code that trains, not what the tree holds when the tables are written
    os.makedirs(os.path.join(out, "logs"))
    runs = {(m, s): os.path.join(out, "runs", "%s-seed%d" % (m, s)) for s in seeds for m in methods}
    exports = {key: os.path.join(out, "exports", os.path.basename(path)) for key, path in runs.items()}
    log("== training %d run%s, two at a time" % (len(runs), "" if len(runs) == 1 else "s"))
    run_two_at_a_time([("training %s, seed %d" % (m, s),
                        [sys.executable] + script + METHODS[m][1]
                        + ["--seed", str(s), "--logdir", runs[m, s]] + train_args,
                        os.path.join(out, "logs", "train-%s-seed%d.txt" % (m, s))) for (m, s) in runs], log)
    export_flags = ["--recompute-bn", str(recompute_bn)] + (
        ["--channel-threshold", channel_threshold] if channel_threshold else [])
    log("== exporting each run")
    run_two_at_a_time([("exporting %s, seed %d" % (m, s),
                        [sys.executable, os.path.join(ROOT, "prune_export.py"), runs[m, s], "--out", exports[m, s],
                         "--baseline", runs["plain", s]] + export_flags + (["--data", data] if data else []),
                        os.path.join(out, "logs", "export-%s-seed%d.txt" % (m, s))) for (m, s) in runs], log)
    rows = [row_of(m, s, exports[m, s]) for (m, s) in runs]
    settings = {"command": command, "commit": commit, "seeds": seeds, "dataset": dataset, "methods": list(methods),
                "train": " ".join([os.path.relpath(script[0], ROOT)] + script[1:] + train_args),
                "export": " ".join(export_flags)}
    for folder in [out] + ([docs] if docs else []):
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(os.path.join(folder, "comparison.json"), json.dumps({"settings": settings, "rows": rows},
                                                                               indent=1) + "\n")
        atomic_write_text(os.path.join(folder, "comparison.md"), markdown(rows, settings))
        draw(rows, os.path.join(folder, "comparison.png"))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eps_resnet.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="DIR", required=True, help="a new directory for the runs, exports and tables")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds; every method trains once per seed "
                                                   "(default: %(default)s)")
    p.add_argument("--dataset", choices=cifar_style_datasets(), default="digits",
                   help="the data set (default: %(default)s, bundled; the others need --data)")
    p.add_argument("--data", metavar="DIR", default=None, help="the data set's directory")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="which of the methods to train, comma-separated; plain is the baseline of every export "
                        "(default: %(default)s)")
    p.add_argument("--train-args", default="", metavar="FLAGS",
                   help="more training flags for every run (train_cifar.py or train_svhn.py), e.g. "
                        "\"-n 9 --max-epoch 60\" (default: none; the data set's recipe)")
    p.add_argument("--recompute-bn", type=int, default=20, metavar="N",
                   help="prune_export.py --recompute-bn for every export, as the demo (default: %(default)s)")
    p.add_argument("--channel-threshold", default=None, metavar="NORM",
                   help="prune_export.py --channel-threshold (default: the export's own default)")
    p.add_argument("--docs", metavar="DIR", default=None,
                   help="also write comparison.md, .json and .png here (make compare: docs/comparison)")
    args = p.parse_args(argv)
    for flag, value in (("--out", args.out), ("--docs", args.docs)):
        if value is not None and not value.strip():
            raise UserError("%s is empty; pass a directory" % flag)
    if args.channel_threshold is not None:
        try:
            check_channel_threshold(float(args.channel_threshold))
        except ValueError:
            raise UserError("--channel-threshold takes a finite channel norm >= 0, got %r" % args.channel_threshold)
    check_recompute_bn(args.recompute_bn)
    try:
        train_args = shlex.split(args.train_args)
    except ValueError as e:
        raise UserError("--train-args cannot be split into flags (%s)" % e)
    command = "python -m eps_resnet.compare " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                  else sys.argv[1:]))
    seeds, methods = parse_seeds(args.seeds), parse_methods(args.methods)
    training_script(args.dataset, args.data)  # before anything is written
    rows = compare(args.out, seeds, args.dataset, args.data, train_args, args.recompute_bn, args.channel_threshold,
                   args.docs, command, methods)
    print(summary_table(rows))
    print("wrote %s" % ", ".join(os.path.join(f, name) for f in [args.out] + ([args.docs] if args.docs else [])
                                for name in FILES))
    return 0


def run():
    """The console script (pyproject.toml)."""
    from .guard import main_guard
    main_guard(main, interrupted="interrupted; the runs finished so far stay in --out")


if __name__ == "__main__":
    run()
