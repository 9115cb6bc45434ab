"""The /review page in a real browser: Debian's chromium, headless, driven by Playwright, against
`mcdrop serve` in a subprocess with referrals seeded by real predictions."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.servers import serving

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path) -> Path:
    """tiny_clf (tabular, 4 features) and a convnet on 1×4×4 images."""
    from service.data import Dataset
    from service.training import TrainConfig, train

    root = tmp_path_factory.mktemp("review_models")
    shutil.copytree(tiny_classifier_dir, root / "tiny_clf")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 1, 4, 4))
    y = (x.sum(axis=(1, 2, 3)) > 0).astype(np.float64)
    cfg = TrainConfig(
        task="classification", name="tiny_img", arch="convnet", conv_channels=[2], hidden=8,
        layers=1, epochs=1,
    )  # fmt: skip
    train(Dataset(x, y), cfg, root / "tiny_img", progress=False)
    return root


def _refer(base: str, model: str, row: Any) -> str:
    r = httpx.post(f"{base}/v1/models/{model}/predict",
                   json={"inputs": [row], "threshold": -1, "samples": 10}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    rid: str = r.json()["predictions"][0]["referral_id"]
    return rid


def test_review_page_lists_and_resolves(model_dir: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    # A generous write timeout: on a loaded machine a slow insert would go to the spool and
    # show up only after the next replay, which is correct but not what this test is about.
    with serving(model_dir, tmp_path, MCDROP_REFERRAL_WRITE_TIMEOUT_MS="30000") as base:
        image_id = _refer(base, "tiny_img", np.linspace(0, 1, 16).reshape(1, 4, 4).tolist())
        tabular_id = _refer(base, "tiny_clf", [0.1, 0.2, -0.3, 1.5])  # the newer one

        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'mcdrop_referrals_recorded_total{path="direct"} 2.0' in metrics
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                sent_keys: list[str | None] = []
                page.on("request", lambda r: sent_keys.append(r.headers.get("x-api-key"))
                        if "/v1/referrals" in r.url else None)  # fmt: skip

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
                assert listed == [tabular_id, image_id]  # newest first

                image = page.locator(f'article[data-referral-id="{image_id}"]')
                assert image.locator("canvas.input-image").count() == 1
                assert image.locator(".feature-table").count() == 0
                features = tabular.locator(".feature-table th").all_inner_texts()
                assert len(features) == 4
                n_classes = tabular.locator("select[name=label] option").count()
                assert tabular.locator(".bar-row").count() == n_classes >= 2
                assert "predictive_entropy" in tabular.locator(".breakdown").inner_text()

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
