"""The run directory's records: their shape (gated and plain) and the one rule set that says what is discarded."""
import json

import pytest

from eps_resnet import UserError
from eps_resnet.rundir import (DISCARD_RULES, DISCARDS_FILE, counts_as_discarded, discarded_in_record, read_records,
                               record_problem)

KERNELS = {"norm": 1.0, "abs_max": 0.5, "percentiles": [-0.5, 0.0, 0.5]}


def gated_record(epoch, averages):
    return {"epoch": epoch, "gated": True, "epsilon": 2.5, "discarded_cnt": sum(averages.values()),
            "blocks": {n: {"is_discarded": a, "response_max": 1.0, "kernels": KERNELS} for n, a in averages.items()}}


def plain_record(epoch, names):
    return {"epoch": epoch, "gated": False, "blocks": {n: {"kernels": KERNELS} for n in names}}


def test_the_two_rules_differ_only_between_their_thresholds():
    assert DISCARD_RULES == {"average": 0.99, "released": 1.0}
    assert counts_as_discarded(0.995) and not counts_as_discarded(0.989)
    assert counts_as_discarded(1.0, "released") and not counts_as_discarded(0.995, "released")
    assert not counts_as_discarded(None)
    with pytest.raises(KeyError):
        counts_as_discarded(1.0, "majority")


def test_discarded_in_a_record_is_sorted_filtered_and_empty_for_plain_runs():
    record = gated_record(3, {"res2.0": 1.0, "res1.1": 0.995, "res1.0": 0.2})
    assert discarded_in_record(record) == ["res1.1", "res2.0"]
    assert discarded_in_record(record, "released") == ["res2.0"]
    assert discarded_in_record(record, names={"res1.1"}) == ["res1.1"]
    assert discarded_in_record(plain_record(3, ["res1.0"])) == [] == discarded_in_record(None)


def test_plain_and_gated_records_read_back_and_a_plain_record_needs_no_gates(tmp_path):
    with open(tmp_path / DISCARDS_FILE, "w") as f:
        for record in (plain_record(1, ["res1.0", "res1.1"]), gated_record(2, {"res1.0": 1.0})):
            f.write(json.dumps(record) + "\n")
    records = read_records(str(tmp_path))
    assert [r["gated"] for r in records] == [False, True]
    # a gated record without its gate statistics is damaged; a plain one without kernels too
    broken = gated_record(1, {"res1.0": 1.0})
    del broken["blocks"]["res1.0"]["is_discarded"]
    assert record_problem(broken) == "block res1.0 is not a gate record"
    assert "kernel" in record_problem({"epoch": 1, "gated": False, "blocks": {"res1.0": {}}})
    with open(tmp_path / DISCARDS_FILE, "a") as f:
        f.write(json.dumps(broken) + "\n")
    with pytest.raises(UserError, match="line 3 is not an epoch record"):
        read_records(str(tmp_path))
