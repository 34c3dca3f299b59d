"""python -m eps_resnet.frontier: the ε frontier of one trained run, and prune_export.py --epsilon at one of its points."""
import dataclasses
import json
import os
import shlex

import pytest

import train_cifar
from eps_resnet.commands import number
from eps_resnet.frontier import epsilon_above, frontier_points
from eps_resnet.rundir import Run
from tests.processes import assert_one_line_error, run_script, run_scripts


def printed_command(stdout: str, program: str) -> list:
    """The one command line in `stdout` that runs `program`, as a shell would split it."""
    found = [shlex.split(line) for line in stdout.splitlines() if line.startswith("  python %s " % program)]
    assert len(found) == 1, stdout
    return found[0]


def recorded(recipe) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(recipe)))  # as run.json holds it


def test_epsilon_above_is_short_and_between_the_two_responses():
    assert epsilon_above(5.4321) == 5.5
    assert epsilon_above(5.4321, 5.45) == 5.44
    assert epsilon_above(0.012345, 0.0124) == 0.01235
    for value, below in ((3.0, None), (3.0, 3.0000001), (1e-7, 2e-7), (123456.0, 123457.0), (9.99, 10.0)):
        eps = epsilon_above(value, below)
        assert eps > value and (below is None or eps < below), (value, below, eps)


def test_frontier_points_remove_more_blocks_as_epsilon_grows():
    largest = {"a": 0.5, "b": 7.0, "c": 3.2, "d": 7.0, "e": 1.9}
    points = frontier_points(largest, trained_epsilon=2.0)
    assert points[0] == {"epsilon": 2.0, "removed": ["a", "e"]}  # prune_export's rule at the trained ε
    assert [p["removed"] for p in points[1:]] == [["a", "c", "e"], ["a", "b", "c", "d", "e"]]  # b, d tie
    eps = [p["epsilon"] for p in points]
    assert eps == sorted(eps) and len(set(eps)) == len(eps)
    for p in points:  # each point removes exactly the blocks whose largest response is below its ε
        assert p["removed"] == sorted(b for b, m in largest.items() if m < p["epsilon"])


@pytest.mark.slow
def test_frontier_of_the_demo_run_and_an_export_at_one_of_its_points(demo, tmp_path):
    """The first point reproduces the demo export's error with training's BatchNorm statistics; compression never drops as ε grows; the suggestion
    keeps its bound on the check half; prune_export --epsilon exports a point with the error the frontier measured."""
    out = str(tmp_path / "frontier")
    proc = run_script("-m", "eps_resnet.frontier", demo["eps"], "--out", out, "--max-error-increase", "3", check=True)
    result = json.load(open(os.path.join(out, "frontier.json")))
    report = json.load(open(os.path.join(demo["export"], "report.json")))
    points = result["points"]
    assert points[0]["epsilon"] == report["epsilon"] == result["trained_epsilon"]
    assert points[0]["removed_blocks"] == sorted(report["discarded"])
    # the demo's export re-estimated BatchNorm statistics; the frontier keeps training's
    assert points[0]["val_error"] == pytest.approx(report["recomputed_bn"]["val_error_trained_statistics"], abs=1e-9)
    assert points[0]["layers_after"] == report["layers_after"] and points[0]["params_after"] == report["params_after"]
    assert [p["epsilon"] for p in points] == sorted(p["epsilon"] for p in points)
    assert all(b["compression_ratio"] >= a["compression_ratio"] and b["blocks_removed"] > a["blocks_removed"]
               for a, b in zip(points, points[1:]))
    assert points[-1]["blocks_removed"] == result["blocks"] == 15
    for p in points:  # the halves partition the images
        both = (p["val_error_select"] * result["select_images"] + p["val_error_check"] * result["check_images"])
        assert both == pytest.approx(p["val_error"] * result["images"], abs=1e-6)
    s = result["suggestion"]
    assert s["holds_on_check"] and s["check_increase"] <= 3, s
    assert s["select_increase"] <= 3 and s["epsilon"] in [p["epsilon"] for p in points]
    later = [p for p in points if p["epsilon"] > s["epsilon"]]  # the largest ε within the bound: all beyond exceed it
    assert all(p["val_error_select"] > points[0]["val_error_select"] + 0.03 for p in later)
    if s["epsilon"] > result["trained_epsilon"]:
        assert printed_command(proc.stdout, "train_cifar.py") == shlex.split(s["retrain_command"])
        recipe, _ = train_cifar.recipe_from_command_line(shlex.split(s["retrain_command"])[2:])
        assert recorded(recipe) == dict(Run.open(demo["eps"]).recipe, epsilon=s["epsilon"], epsilon_start_epoch=0,
                                        load=demo["eps"], logdir=demo["eps"] + "-eps" + number(s["epsilon"]))
    else:
        assert "the trained ε itself" in proc.stdout
    assert os.path.getsize(os.path.join(out, "frontier.png")) > 10000
    assert "select half" in open(os.path.join(out, "frontier.md")).read()

    # export the first point beyond the trained ε, and the frontier again with the export's re-estimated
    # statistics (20 batches, the same fixed seed), side by side
    point = points[1]
    export, again = str(tmp_path / "export"), str(tmp_path / "frontier-bn")
    exporting, proc = run_scripts(
        ("prune_export.py", demo["eps"], "--out", export, "--epsilon", point["epsilon"], "--no-timing"),
        ("-m", "eps_resnet.frontier", demo["eps"], "--out", again, "--recompute-bn", "20", "--max-error-increase", "3"),
        check=True)
    # the export is verified against that reduced network, its error as the frontier measured
    exported = json.load(open(os.path.join(export, "report.json")))
    assert sorted(exported["discarded"]) == point["removed_blocks"]
    assert exported["export_epsilon"] == point["epsilon"] and exported["epsilon"] == report["epsilon"]
    assert exported["val_error_export"] == pytest.approx(point["val_error"], abs=1e-9)
    assert exported["error_change"] == pytest.approx(point["val_error"] - report["val_error_gated"], abs=1e-9)
    assert exported["verification"]["top1_agreement"] == 1.0
    assert exported["verification"]["max_abs_diff"] <= 1e-3
    assert "above the trained ε" in exporting.stdout and "points" in exporting.stdout
    # with re-estimated statistics the first point is the demo's export
    recomputed = json.load(open(os.path.join(again, "frontier.json")))
    assert recomputed["recompute_bn"] == 20 and "re-estimated for each point's network on 1280" in proc.stdout
    assert recomputed["points"][0]["val_error"] == pytest.approx(report["val_error_export"], abs=1e-9)
    assert [p["removed_blocks"] for p in recomputed["points"]] == [p["removed_blocks"] for p in points]
    assert recomputed["suggestion"]["export_command"].endswith("--recompute-bn 20")

    # requests that cannot be met: one line each, nothing written
    x = str(tmp_path / "x")
    refusals = [  # (what the error line says, the command)
        ("--recompute-bn takes a number of training batches",
         ("-m", "eps_resnet.frontier", demo["eps"], "--out", x, "--recompute-bn", "-2")),
        ("below the run's trained ε",
         ("prune_export.py", demo["eps"], "--out", x, "--epsilon", report["epsilon"] / 2, "--no-timing")),
        ("plain ResNet run", ("prune_export.py", demo["plain"], "--out", x, "--epsilon", "9")),
        ("drop --criterion ema", ("prune_export.py", demo["eps"], "--out", x, "--epsilon", "9", "--criterion", "ema")),
        ("plain ResNet run", ("-m", "eps_resnet.frontier", demo["plain"], "--out", x)),
        ("inside the training run",
         ("-m", "eps_resnet.frontier", demo["eps"], "--out", os.path.join(demo["eps"], "frontier"))),
    ]
    for (said, _), proc in zip(refusals, run_scripts(*[command for _, command in refusals])):
        assert_one_line_error(proc, said)
    assert not os.path.exists(str(tmp_path / "x")) and not os.path.exists(os.path.join(demo["eps"], "frontier"))


def test_the_frontiers_printed_commands_run_as_printed_keep_the_runs_settings(tmp_path):
    """A demo-settings run with settings the script would not choose (and a space in its path): the retraining
    the frontier prints trains with them, and its export command exports the point it measured."""
    logdir = str(tmp_path / "a run")
    run_script("train_cifar.py", "--demo", "-n", "1", "--batch", "16", "--steps-per-epoch", "3", "--max-epoch", "1",
               "--epsilon-start", "0", "-e", "1", "--mean-from", "all", "--no-side", "--seed", "5",
               "--histogram-blocks", "0", "--logdir", logdir, check=True)
    out = str(tmp_path / "frontier")
    proc = run_script("-m", "eps_resnet.frontier", logdir, "--out", out, "--max-error-increase", "100",
                      "--calib-batches", "2", check=True)
    s = json.load(open(os.path.join(out, "frontier.json")))["suggestion"]
    point = [p for p in json.load(open(os.path.join(out, "frontier.json")))["points"] if p["epsilon"] == s["epsilon"]][0]
    assert s["epsilon"] > 1 and "with the run's own settings (its run.json):" in proc.stdout
    retrain, export = printed_command(proc.stdout, "train_cifar.py"), printed_command(proc.stdout, "prune_export.py")
    export_dir = str(tmp_path / "export")
    retrained, exported = run_scripts(retrain[1:], [export_dir if a == "EXPORT_DIR" else a for a in export[1:]],
                                      check=True)
    new_logdir = logdir + "-eps" + number(s["epsilon"])
    assert Run.open(new_logdir).recipe == dict(Run.open(logdir).recipe, epsilon=s["epsilon"], epsilon_start_epoch=0,
                                               load=logdir, logdir=new_logdir)
    report = json.load(open(os.path.join(export_dir, "report.json")))
    assert sorted(report["discarded"]) == point["removed_blocks"] and report["export_epsilon"] == s["epsilon"]
    # the export's own hint: the same retraining command
    assert shlex.split(report["retrain_command"]) == retrain
    assert report["retrain_command"] in open(os.path.join(export_dir, "report.md")).read()
