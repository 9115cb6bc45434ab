"""The /review page warns when a model's calibration watch has shifted (real browser: Debian's
chromium, headless, driven by Playwright, against `mcdrop serve` in a subprocess)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.artifacts.manifest import read_manifest, write_manifest
from service.artifacts.reference import save_reference
from tests.referrals.test_review_page import CHROMIUM, CHROMIUM_ARGS
from tests.servers import serving

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.timeout(180),
]


def test_review_page_shows_a_banner_for_a_shifted_model(
    tmp_path: Path, tiny_classifier_dir: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    root = tmp_path / "models"
    for name in ("drifting", "steady"):
        shutil.copytree(tiny_classifier_dir, root / name)
        m = read_manifest(root / name)
        # drifting: reference scores below any live entropy; steady: above all of them.
        scores = np.linspace(0, 1e-9, 100) if name == "drifting" else np.linspace(50, 60, 100)
        m.reference = save_reference(
            root / name,
            scores,
            m.uncertainty_metric,
            float(scores[89]),
            m.default_samples,
            0.1,
            "2026-01-01T00:00:00+00:00",
        )
        write_manifest(root / name, m)
    with serving(root, tmp_path) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}/review")
            page.wait_for_load_state("networkidle")
            assert page.locator("#watch-banner").is_hidden()  # nothing has shifted yet

            for name in ("drifting", "steady"):
                for _ in range(20):
                    r = httpx.post(
                        f"{base}/v1/models/{name}/predict",
                        timeout=30,
                        json={"inputs": [[0.1, 0.2, -0.3, 1.5]], "refer": False},
                    )
                    assert r.status_code == 200, r.text
            page.fill("#reviewer", "ann")  # the form needs a reviewer to submit
            page.click("#load")
            banner = page.locator("#watch-banner")
            banner.wait_for(state="visible", timeout=20_000)
            text = banner.inner_text()
            assert "Calibration shifted for model drifting" in text
            assert "steady" not in text
            assert problems == []
            page.screenshot(path=str(tmp_path / "review-banner.png"))
        finally:
            browser.close()
