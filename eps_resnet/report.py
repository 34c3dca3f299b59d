"""The export report: tabulate tables, report.md and report.json (the figures are in eps_resnet.figures)."""
import json
import os

from tabulate import tabulate

from .fileio import atomic_write_text
from .plan import Plan


def _mb(n):
    return "%.2f MB" % (n / 1e6)


def group_table(plan: Plan, reduced: Plan) -> str:
    rows = []
    for g in plan.groups:
        total, kept = plan.blocks_in_group(g), reduced.blocks_in_group(g, kept_only=True)
        rows.append(["group %d" % g, "%d / %d" % (len(kept), len(total)),
                     ", ".join(b.name for b in total if b.name not in {k.name for k in kept}) or "-"])
    return tabulate(rows, headers=["", "kept / total blocks", "discarded"])


def summary_table(report: dict) -> str:
    rows = [["layers", report["layers_before"], report["layers_after"]],
            ["parameters", "%.3f M" % (report["params_before"] / 1e6), "%.3f M" % (report["params_after"] / 1e6)],
            ["FLOPs (multiply-accumulates)", "%.3f G" % (report["flops_before"] / 1e9),
             "%.3f G" % (report["flops_after"] / 1e9)],
            ["SavedModel size", _mb(report["bytes_before"]), _mb(report["bytes_after"])]]
    gated = " (gated)" if report.get("gated", True) else ""  # a plain run's trained network has no gates
    if "val_error_gated" in report:
        rows.append(["validation error (%d images)" % report["calibration_images"],
                     "%.2f%%%s" % (100 * report["val_error_gated"], gated), "%.2f%%" % (100 * report["val_error_export"])])
    if "baseline_val_error" in report:
        rows.append(["plain baseline (%d layers), same images" % report["baseline_layers"],
                     "%.2f%%" % (100 * report["baseline_val_error"]), ""])
    for batch in (1, 64):
        key = "latency_b%d" % batch
        if key in report:
            rows.append(["CPU latency, batch %d" % batch, "%.1f ms%s" % (report[key]["gated_ms"], gated),
                         "%.1f ms" % report[key]["export_ms"]])
    return tabulate(rows, headers=["", "trained network", "export"])


def comparison_line(report: dict) -> str:
    """One line: blocks discarded, compression, validation error of the export against the plain baseline."""
    return ("ε-ResNet: %d of %d blocks discarded, compression %.2f (%d -> %d layers, %.3f M -> %.3f M parameters); "
            "validation error %.2f%% (reduced export) vs %.2f%% (plain %s), %+.2f points, on the same %d images"
            % (len(report["discarded"]), len(report["evidence"]), report["compression_ratio"], report["layers_before"],
               report["layers_after"], report["params_before"] / 1e6, report["params_after"] / 1e6,
               100 * report["val_error_export"], 100 * report["baseline_val_error"],
               report.get("baseline_title", "ResNet-%d" % report["baseline_layers"]),  # reports before it was kept
               100 * (report["val_error_export"] - report["baseline_val_error"]), report["calibration_images"]))


def claim_checks(report: dict, collapse: list) -> list:
    """The paper's claim on one ε-ResNet export with a plain baseline, as [(statement, holds)]: at least a third of
    the blocks discarded, no accuracy loss beyond 0.5 points, and every discarded block's kernel norm at most half
    of what it was when its gate closed (weight collapse, paper Fig. 5)."""
    blocks = len(report["evidence"])
    loss = 100 * (report["val_error_export"] - report["baseline_val_error"])
    worst = max((c["ratio"] for c in collapse), default=None)
    return [("at least 1/3 of the blocks discarded (%d of %d)" % (len(report["discarded"]), blocks),
             3 * len(report["discarded"]) >= blocks),
            ("validation error at most the plain baseline's + 0.5 points (%+.2f points)" % loss, loss <= 0.5),
            ("every discarded block's kernel norm at most half its norm when the gate closed (largest ratio %s)"
             % ("-" if worst is None else "%.2f" % worst), worst is not None and worst <= 0.5)]


def channels_paragraph(report: dict) -> list:
    """The channel pruning's part of the export (eps_resnet.channels), or nothing."""
    c = report.get("channels")
    if not c:
        return []
    text = ("Channels: %d of %d channel slots removed (norm below %g over the kernel slices that write and read "
            "each; the largest removed %.3g, the smallest kept %.3g), %d of %d channel groups thinned"
            % (c["removed"], c["slots"], c["threshold"], c["largest_removed_norm"], c["smallest_kept_norm"],
               c["groups_thinned"], c["groups"]))
    if c["blocks_emptied"]:
        text += ", and %d block(s) whose inner channels all fell below it removed whole (%s)" % (
            len(c["blocks_emptied"]), ", ".join(c["blocks_emptied"]))
    text += ". Parameters %.3f M -> %.3f M." % (report["params_before"] / 1e6, report["params_after"] / 1e6)
    if "val_error_reference" in c:
        text += (" The reduced network computes the trained one with those channels zeroed (max |logit diff| "
                 "%.2g); validation error %.2f%% (trained) -> %.2f%% (channels zeroed)."
                 % (c["reference_max_abs_diff"], 100 * report.get("val_error_gated", float("nan")),
                    100 * c["val_error_reference"]))
    return [text, ""]


def evidence_table(report: dict) -> str:
    rows = []
    for e in report["evidence"]:
        rows.append([e["block"], "-" if e["calibration_max"] is None else "%.3g" % e["calibration_max"],
                     "-" if e["ema_is_discarded"] is None else "%.3f" % e["ema_is_discarded"],
                     "-" if e["kernel_norm"] is None else "%.3g" % e["kernel_norm"],
                     "discarded" if e["discarded"] else "emptied (channels)" if e.get("emptied_by_channels") else "kept"])
    return tabulate(rows, headers=["block", "max|F| on calibration", "is_discarded (avg, checkpoint's epoch)",
                                   "kernel norm", "decision"])


def artefact_table(report: dict) -> str:
    rows = []
    for name, a in sorted(report.get("artefacts", {}).items(), key=lambda kv: (not kv[0].isdigit(), kv[0])):
        label = "%s/ (SavedModel)" % name if name.isdigit() else name
        rows.append([label, _mb(a["bytes"]), "%.2g" % a["max_abs_diff"], "%.2f%%" % (100 * a["top1_agreement"]),
                     "%.2f%%" % (100 * a["val_error"]), "%.2f ms" % a["latency_b1_ms"]])
    return tabulate(rows, headers=["artefact", "size", "max |logit diff|", "top-1 agreement", "validation error",
                                   "latency, batch 1"])


def export_report_text(report: dict, plan: Plan, reduced: Plan) -> str:
    lines = ["# ε-ResNet export", ""]
    if not report["gated"]:
        lines += ["This run trained a plain ResNet (no gates): no block can be discarded by a gate; the export is the "
                  "full network%s." % (" less the channels below" if report.get("channels", {}).get("removed") else ""),
                  ""]
    else:
        lines += ["Discarded %d of %d blocks (criterion: %s, ε = %g). Compression ratio %.2f (layers %d -> %d)."
                  % (len(report["discarded"]), len(plan.blocks), report["criterion"],
                     report.get("export_epsilon", report["epsilon"]), report["compression_ratio"],
                     report["layers_before"], report["layers_after"]), ""]
        if "export_epsilon" in report:
            lines += ["Exported at ε = %g, above the trained ε = %g: the blocks whose largest calibration response lies "
                      "between the two were removed although their responses were not zero, which changes the function"
                      "%s. Retraining at this ε lets the network adapt to the removal; with the run's own settings%s:"
                      % (report["export_epsilon"], report["epsilon"],
                         "" if "error_change" not in report else
                         ": validation error %.2f%% (gated model) -> %.2f%% (export), %+.2f points"
                         % (100 * report["val_error_gated"], 100 * report["val_error_export"],
                            100 * report["error_change"]),
                         " (" + report["retrain_note"] + ")" if report.get("retrain_note") else ""),
                  ""] + (["    " + report["retrain_command"], ""] if "retrain_command" in report else [])
    if "recomputed_bn" in report:
        bn = report["recomputed_bn"]
        lines += ["BatchNorm statistics re-estimated for the reduced network on %d training images (--recompute-bn; "
                  "not in the paper): validation error %.2f%% with the moving averages of training, %s with the new "
                  "statistics%s.%s"
                  % (bn["images"], 100 * bn["val_error_trained_statistics"],
                     "%.2f%%" % (100 * report["val_error_export"]) if "val_error_export" in report else "unmeasured",
                     " (gated model: %.2f%%)" % (100 * report["val_error_gated"]) if "val_error_gated" in report else "",
                     " The plain baseline's statistics were re-estimated alike." if report.get("baseline_bn_recomputed")
                     else ""), ""]
    lines += channels_paragraph(report)
    if "baseline_val_error" in report and "val_error_export" in report:
        lines += [comparison_line(report), ""]
    lines += ["```", group_table(plan, reduced), "```", "", "```", summary_table(report), "```", ""]
    if "verification" in report:
        v = report["verification"]
        lines += ["Verification against the %s on the calibration images: max |logit difference| %.3g, top-1 "
                  "agreement %.2f%%." % (_reference(report), v["max_abs_diff"], 100 * v["top1_agreement"]), ""]
        shut = report.get("gates_shut_on_kept_blocks", {})
        if shut.get("blocks"):
            lines += ["The gated model decides each gate per batch of 64 images. The gates of kept blocks %s were shut "
                      "on %d of %d calibration batches (no image of the batch reached ε), where the reduced network "
                      "applies them as on every other batch; the comparison above uses the %d images of the other "
                      "batches." % (", ".join("%s (%d)" % kv for kv in sorted(shut["blocks"].items())), shut["batches"],
                                    shut["of"], shut["images_compared"]), ""]
    if report.get("artefacts"):
        lines += ["Each artefact loaded in a process that imports only TensorFlow, against the %s on the calibration "
                  "images (latency on this machine's CPU):" % _reference(report), "", "```", artefact_table(report),
                  "```", ""]
    if "latency_b64" in report:
        lines += ["Measured speedup at batch 64: %.2fx (ideal from FLOPs: %.2fx, ratio %.2f)."
                  % (report["latency_b64"]["speedup"], report["ideal_speedup"],
                     report["latency_b64"]["speedup"] / report["ideal_speedup"]), ""]
    lines += ["## Evidence per block", "", "```", evidence_table(report), "```", ""]
    return "\n".join(lines)


def _reference(report: dict) -> str:
    """What the export's artefacts were compared with."""
    why = [w for key, w in (("export_epsilon", "ε above the trained one"),
                            ("recomputed_bn", "BatchNorm statistics re-estimated"),
                            ("channels", "channels removed")) if key in report]
    if not report.get("channels", {}).get("removed") and "channels removed" in why:
        why.remove("channels removed")
    if why:
        return "reduced network computed in the exporting process (%s)" % ", ".join(why)
    return "gated checkpoint"


def write_export_report(report: dict, plan: Plan, reduced: Plan, directory: str):
    atomic_write_text(os.path.join(directory, "report.md"), export_report_text(report, plan, reduced))
    atomic_write_text(os.path.join(directory, "report.json"),
                      json.dumps(report, indent=1, sort_keys=True, default=float))
