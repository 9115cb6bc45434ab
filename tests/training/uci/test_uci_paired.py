"""bench/uci/paired.py: the split-by-split difference of two tuned runs."""

from __future__ import annotations

import math
import statistics
from typing import Any

from tests.conftest import REPO
from tests.helpers import load_script

PAIRED = REPO / "bench" / "uci" / "paired.py"


def run(rmse: dict[int, float], ll: dict[int, float], name: str = "yacht") -> dict[str, Any]:
    splits = [{"split": s, "rmse_tuned": rmse[s], "ll_tuned": ll[s]} for s in rmse]
    return {"datasets": [{"dataset": name, "splits": splits}]}


def test_pairs_splits_by_index_and_reports_the_standard_error_of_the_differences() -> None:
    paired = load_script(PAIRED)
    # Splits listed in a different order in the second file, and one split only in the first:
    # pairing must go by split index and skip the unmatched one.
    before = run({0: 1.0, 1: 2.0, 2: 3.0, 3: 9.0}, {0: -1.0, 1: -2.0, 2: -3.0, 3: -9.0})
    after = run({2: 2.7, 0: 0.9, 1: 1.6}, {2: -2.9, 0: -0.5, 1: -1.8})
    (row,) = paired.paired(before, after)
    diffs = [0.9 - 1.0, 1.6 - 2.0, 2.7 - 3.0]
    assert row["dataset"] == "yacht" and row["splits"] == 3
    mean, se = row["rmse_tuned"]
    assert math.isclose(mean, statistics.fmean(diffs))
    assert math.isclose(se, statistics.stdev(diffs) / math.sqrt(3))
    assert math.isclose(row["ll_tuned"][0], statistics.fmean([0.5, 0.2, 0.1]))


def test_only_datasets_in_both_files_are_compared() -> None:
    paired = load_script(PAIRED)
    before = run({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, "yacht")
    after = run({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, "concrete")
    assert paired.paired(before, after) == []
