"""The /review page in a real browser: Debian's chromium, headless, driven by Playwright, against
`mcdrop serve` in a subprocess with referrals seeded by real predictions."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.servers import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path, tiny_regression_dir: Path
) -> Path:
    """tiny_clf (tabular, 4 features), tiny_reg (regression), a convnet on 1×4×4 8-bit images
    (0 drawn black, the default) and a copy of it whose manifest says 0 is drawn white."""
    from service.artifacts.data import Dataset
    from service.artifacts.manifest import read_manifest, write_manifest
    from service.training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("review_models")
    shutil.copytree(tiny_classifier_dir, root / "tiny_clf")
    shutil.copytree(tiny_regression_dir, root / "tiny_reg")
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(40, 1, 4, 4)).astype(np.float64)
    y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(np.float64)
    cfg = TrainConfig(
        task="classification",
        name="tiny_img",
        arch="convnet",
        conv_channels=[2],
        hidden=8,
        layers=1,
        epochs=1,
        input_scale=1 / 255,
    )
    train(Dataset(x, y), cfg, root / "tiny_img", progress=False)
    paper = Path(shutil.copytree(root / "tiny_img", root / "tiny_paper"))
    manifest = read_manifest(paper)
    write_manifest(paper, manifest.model_copy(update={"name": "tiny_paper", "image_zero": "white"}))
    return root


# Left two columns 0, right two 255: drawn black | white when 0 is black, white | black if not.
HALF_IMAGE = [[[0.0, 0.0, 255.0, 255.0]] * 4]
BLACK, WHITE = [0, 0, 0, 255], [255, 255, 255, 255]


def _pixels(card: Any) -> list[list[int]]:
    flat: list[int] = card.locator("canvas.input-image").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )
    return [flat[i : i + 4] for i in range(0, len(flat), 4)]


def _rounded(mean: float, std: float) -> str:
    # The page's rule: one decimal more than the standard deviation's first significant digit.
    decimals = min(6, max(0, 1 - math.floor(math.log10(std))))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _refer(base: str, model: str, row: Any) -> str:
    r = httpx.post(
        f"{base}/v1/models/{model}/predict",
        json={"inputs": [row], "threshold": -1, "samples": 10},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    rid: str = r.json()["predictions"][0]["referral_id"]
    return rid


def test_review_page_lists_and_resolves(model_dir: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    # A generous write timeout: on a loaded machine a slow insert would go to the spool and
    # show up only after the next replay, which is correct but not what this test is about.
    with serving(model_dir, tmp_path, MCDROP_REFERRAL_WRITE_TIMEOUT_MS="30000") as base:
        paper_id = _refer(base, "tiny_paper", HALF_IMAGE)
        image_id = _refer(base, "tiny_img", HALF_IMAGE)
        reg_id = _refer(base, "tiny_reg", [0.3, -1.2, 0.8])
        tabular_id = _refer(base, "tiny_clf", [0.1, 0.2, -0.3, 1.5])  # the newest
        reg_prediction = httpx.get(f"{base}/v1/referrals/{reg_id}", timeout=10).json()["prediction"]
        # MCDROP_TEST_SCREENSHOTS=folder keeps the screenshots, to look at the page.
        shots = Path(os.environ.get("MCDROP_TEST_SCREENSHOTS", tmp_path))

        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'mcdrop_referrals_recorded_total{path="direct"} 4.0' in metrics
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                sent_keys: list[str | None] = []
                page.on(
                    "request",
                    lambda r: (
                        sent_keys.append(r.headers.get("x-api-key"))
                        if "/v1/referrals" in r.url
                        else None
                    ),
                )

                page.goto(f"{base}/review")
                page.fill("#api-key", "k-123")
                page.fill("#reviewer", "ann")
                sent_keys.clear()  # the first, automatic load had no key yet
                page.click("#load")
                tabular = page.locator(f'article[data-referral-id="{tabular_id}"]')
                try:
                    tabular.wait_for(timeout=20_000)
                except sync_api.TimeoutError:
                    status = page.locator("#status").inner_text()
                    raise AssertionError(
                        f"item not listed; status {status!r}, {problems}"
                    ) from None
                listed = page.locator("article.referral").evaluate_all(
                    "els => els.map(e => e.dataset.referralId)"
                )
                assert listed == [tabular_id, reg_id, image_id, paper_id]  # newest first
                page.screenshot(path=str(shots / "review.png"), full_page=True)

                # Images as the data is: 0 black by default; white where the manifest says so.
                image = page.locator(f'article[data-referral-id="{image_id}"]')
                assert image.locator("canvas.input-image").count() == 1
                assert image.locator(".feature-table").count() == 0
                assert [p for i, p in enumerate(_pixels(image)) if i % 4 < 2] == [BLACK] * 8
                assert [p for i, p in enumerate(_pixels(image)) if i % 4 >= 2] == [WHITE] * 8
                paper = page.locator(f'article[data-referral-id="{paper_id}"]')
                assert [p for i, p in enumerate(_pixels(paper)) if i % 4 < 2] == [WHITE] * 8

                # The model's suggestion beside the answer, rounded; the answer starts empty.
                regression = page.locator(f'article[data-referral-id="{reg_id}"]')
                assert regression.locator("input[name=value-0]").input_value() == ""
                mean, std = reg_prediction["mean"][0], reg_prediction["std"][0]
                shown = regression.locator("form.answer .suggestion").inner_text()
                assert shown == f"model: {_rounded(mean, std)}"
                assert repr(mean) not in regression.inner_text()  # not at full precision
                regression.screenshot(path=str(shots / "review-regression.png"))
                image.screenshot(path=str(shots / "review-image.png"))

                features = tabular.locator(".feature-table th").all_inner_texts()
                assert len(features) == 4
                select = tabular.locator("select[name=label]")
                assert select.input_value() == ""  # nothing chosen for the reviewer
                n_classes = select.locator("option:not([disabled])").count()
                assert tabular.locator(".bar-row").count() == n_classes >= 2
                assert tabular.locator("form.answer .suggestion").inner_text().startswith("model: ")
                assert "predictive_entropy" in tabular.locator(".breakdown").inner_text()

                regression.locator("input[name=value-0]").fill("1.5")
                regression.locator("button.submit").click()
                regression.wait_for(state="detached")

                tabular.locator("select[name=label]").select_option("0")
                tabular.locator("textarea[name=note]").fill("checked by hand")
                tabular.locator("button.submit").click()
                tabular.wait_for(state="detached")
                assert "Resolved" in page.locator("#status").inner_text()
                assert sent_keys and set(sent_keys) == {"k-123"}  # the key the reviewer typed
                assert page.evaluate("sessionStorage.getItem('mcdrop.apiKey')") == "k-123"
                assert problems == []  # no script errors, no CSP violations
            finally:
                browser.close()

        got = httpx.get(f"{base}/v1/referrals/{tabular_id}", timeout=10).json()
        assert got["status"] == "resolved"
        assert got["resolution"]["label"] == 0 and got["resolution"]["reviewer"] == "ann"
        assert got["resolution"]["note"] == "checked by hand"
        assert (
            httpx.get(f"{base}/v1/referrals/{image_id}", timeout=10).json()["status"] == "pending"
        )
        got = httpx.get(f"{base}/v1/referrals/{reg_id}", timeout=10).json()
        assert got["status"] == "resolved" and got["resolution"]["value"] == [1.5]
