"""Figures drawn from a small recorded run: valid PNGs whose plotted data match the records."""
import json
import os
import re

import numpy as np
import pytest

from eps_resnet import UserError
from eps_resnet.plan import cifar_plan
from eps_resnet.figures import (FIGURES, RunRecords, block_map, discard_ratio, error_curves, gate_heatmap,
                                group_proportions, main, pyplot, responses, weight_collapse, write_figures)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(epoch, closed, lr, eps, reset=False, val=0.1, gated=True):
    plan = cifar_plan(2)
    blocks = {}
    for i, b in enumerate(plan.blocks):
        w = 0.5 / epoch if b.name in closed else (1.0 if gated else 0.9)
        blocks[b.name] = {"kernels": {"norm": 10 * w, "abs_max": w,
                                      "percentiles": [-w, -0.6 * w, -0.3 * w, 0, 0.3 * w, 0.6 * w, w]}}
        if gated:
            blocks[b.name].update(is_discarded=1.0 if b.name in closed else 0.0,
                                  response_max=0.1 if b.name in closed else 5.0 * (i + 1))
    if not gated:
        return {"epoch": epoch, "global_step": 10 * epoch, "learning_rate": lr, "lr_reset": False, "gated": False,
                "blocks": blocks, "val_error": val}
    return {"epoch": epoch, "global_step": 10 * epoch, "epsilon": eps, "learning_rate": lr, "lr_reset": reset,
            "discarded_cnt": float(len(closed)), "blocks": blocks, "val_error": val, "val_error_reduced": val / 2}


@pytest.fixture
def recorded_run(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    cifar_plan(2).save(str(logdir / "plan.json"))
    recs = [record(1, [], 0.1, 0.0), record(2, [], 0.1, 2.5), record(3, ["res3.1"], 0.1, 2.5, reset=True),
            record(4, ["res3.1", "res2.0"], 0.1, 2.5, reset=True), record(5, ["res3.1", "res2.0"], 0.01, 2.5)]
    with open(str(logdir / "discards.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write('{"epoch": 6, "blocks": {"res1.0"')  # a crash mid-write
    stats = [{"epoch_num": e, "train_error": 0.5 / e, "val_error": 0.6 / e, "side_train_error": 0.7 / e,
              "val_side_error": 0.8 / e, "val_error_reduced": 0.3 / e} for e in range(1, 6)]
    (logdir / "stats.json").write_text(json.dumps(stats))
    return str(logdir)


@pytest.fixture
def plain_run(tmp_path):
    """A plain run of the same network: kernel-only records (the control) and its validation errors."""
    logdir = tmp_path / "plain"
    logdir.mkdir()
    cifar_plan(2).save(str(logdir / "plan.json"))
    with open(str(logdir / "discards.jsonl"), "w") as f:
        for e in range(1, 6):
            f.write(json.dumps(record(e, [], 0.1, None, gated=False)) + "\n")
    (logdir / "stats.json").write_text(json.dumps([{"epoch_num": e, "val_error": 0.2 / e} for e in range(1, 6)]))
    return str(logdir)


def test_all_figures_are_written_as_pngs(recorded_run, tmp_path):
    paths = write_figures(recorded_run, str(tmp_path / "figs"), log=lambda *a: None)
    assert [os.path.basename(p) for p in paths] == [n + ".png" for n in FIGURES]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert os.path.getsize(p) > 10000
        from matplotlib.image import imread
        h, w = imread(p).shape[:2]
        assert h >= 300 and w >= 600


def test_plotted_data_match_the_records(recorded_run):
    runrec = RunRecords.load(recorded_run)
    assert [r["epoch"] for r in runrec.records] == [1, 2, 3, 4, 5]  # truncated line skipped
    plt = pyplot()
    fig, ax = plt.subplots()
    bars = block_map(runrec, ax)
    colors = [b.get_facecolor()[:3] for b in bars]
    red = [n for n, c in zip(runrec.plan.block_names, colors) if c[0] > 0.7]
    assert len(bars) == 6 and red == ["res2.0", "res3.1"]
    assert "compression 1.40" in ax.get_title()  # 14 layers -> 10
    fig, ax = plt.subplots()
    line = discard_ratio(runrec, ax)
    np.testing.assert_allclose(line.get_ydata(), [0, 0, 1 / 6, 2 / 6, 2 / 6])
    assert sorted(l.get_xdata()[0] for l in ax.lines if l.get_linestyle() == ":") == [3, 4]  # resets marked
    fig, ax = plt.subplots()
    kept, gone = group_proportions(runrec, ax)
    np.testing.assert_allclose([b.get_height() for b in gone], [0, 0.5, 0.5])
    np.testing.assert_allclose([b.get_height() for b in kept], [1, 0.5, 0.5])
    fig, ax = plt.subplots()
    lines, control = weight_collapse(runrec, ax)
    assert "res3.1" in ax.get_title() and "Fig. 5" in ax.get_title() and not control
    np.testing.assert_allclose(lines[-1].get_ydata(), [1.0, 1.0, 0.5 / 3, 0.5 / 4, 0.5 / 5])  # max shrinks
    fig, ax = plt.subplots()
    bars = responses(runrec, ax)
    np.testing.assert_allclose([b.get_height() for b in bars], [5, 10, 0.1, 20, 25, 0.1])  # network order, last epoch
    assert [l.get_ydata()[0] for l in ax.lines if l.get_linestyle() == "-"] == [2.5]  # ε
    fig, axes = plt.subplots(2, 1)
    flags, ratio = gate_heatmap(runrec, axes)
    assert flags.shape == (6, 5) and flags[runrec.plan.block_names.index("res3.1")].tolist() == [0, 0, 1, 1, 1]
    assert np.isnan(ratio[:, 0]).all()  # ε 0 in epoch 1: no ratio
    np.testing.assert_allclose(ratio[0, 1:], 2.0)  # 5 / 2.5
    plt.close("all")


def test_the_plain_run_is_the_control_and_the_reduced_error_leads(recorded_run, plain_run, tmp_path):
    runrec = RunRecords.load(recorded_run, baseline=plain_run)
    plt = pyplot()
    fig, ax = plt.subplots()
    lines, control = weight_collapse(runrec, ax)
    assert len(control) == 3 and "plain run's res3.1" in ax.get_title()
    np.testing.assert_allclose(control[-1].get_ydata(), [0.9] * 5)  # the plain run's max of the same block
    fig, ax = plt.subplots()
    lines = error_curves(runrec, ax)
    by_label = {l.get_label(): l for l in lines}
    reduced = by_label["reduced network (blocks discarded so far removed)"]
    np.testing.assert_allclose(reduced.get_ydata(), [30 / e for e in range(1, 6)])
    np.testing.assert_allclose(by_label["plain run (baseline)"].get_ydata(), [20 / e for e in range(1, 6)])
    assert "gated network as trained (gates decided per batch)" in by_label
    plt.close("all")
    paths = write_figures(plain_run, str(tmp_path / "plain-figs"), log=lambda *a: None)
    assert [os.path.basename(p) for p in paths] == ["error_curves.png"]  # a plain run has no gate figures
    with pytest.raises(UserError, match="is an ε-ResNet run"):
        write_figures(recorded_run, str(tmp_path / "f"), baseline=recorded_run)
    other = tmp_path / "other"
    other.mkdir()
    cifar_plan(1).save(str(other / "plan.json"))
    with pytest.raises(UserError, match="another network"):
        write_figures(recorded_run, str(tmp_path / "f"), baseline=str(other))


def test_the_command_names_each_paper_figure(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name, source in (("block_map", "Fig. 1"), ("weight_collapse", "Fig. 5"), ("discard_ratio", "Fig. 9"),
                         ("group_proportions", "Fig. 10")):
        assert re.search(r"%s\.png +paper %s\b" % (name, re.escape(source)), text), text


def test_bad_log_directories(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="plan.json"):
        RunRecords.load(str(empty))
    cifar_plan(1).save(str(empty / "plan.json"))
    with pytest.raises(UserError, match="no per-epoch records"):
        RunRecords.load(str(empty))


def test_unknown_block_names_are_reported_and_ignored(recorded_run, tmp_path):
    with open(os.path.join(recorded_run, "discards.jsonl"), "a") as f:
        extra = record(6, [], 0.01, 2.5)
        extra["blocks"]["res9.9"] = dict(extra["blocks"]["res1.0"])
        f.write("\n" + json.dumps(extra) + "\n")
    messages = []
    write_figures(recorded_run, str(tmp_path / "f"), log=messages.append)
    assert any("res9.9" in m for m in messages)
