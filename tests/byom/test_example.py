"""examples/bring_your_own.py runs end to end: train, package, calibrate, serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import load_script

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bring_your_own.py"


def test_example_trains_packages_calibrates_and_serves(tmp_path: Path) -> None:
    example = load_script(EXAMPLE)
    result = example.main(tmp_path, epochs=3, train_rows=300)  # a short run of the same steps
    # Chance is 0.1; on 297 test digits its SE is 0.017, so 0.3 is far beyond luck.
    assert result["test_accuracy"] > 0.3
    assert 0.0 <= result["referred"] <= 1.0 and result["first_reply"] in range(10)
    folder = tmp_path / "models" / "digits-resnet"
    manifest = (folder / "model.json").read_text()
    assert '"calibration": {' in manifest  # the threshold came from `mcdrop calibrate`
    assert np.isfinite(result["accuracy_on_kept"])
