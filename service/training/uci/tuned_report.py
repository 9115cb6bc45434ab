"""The tuned protocol's table: ours beside three published references.

- the paper's 10x-epochs column (report.PUBLISHED): at or beyond it, allowing two of its SEs;
- Gal's 2018 tuned column (DropoutUncertaintyExps readme: per-split grid, 10x epochs): reached
  when ours, rounded to its 2 decimals, is at or beyond it (it gives no standard errors);
- deep ensembles' published test NLL (Lakshminarayanan et al. 2017, Table 1): beaten when our
  NLL (= -LL), rounded to 2 decimals, is strictly lower.
"""

from __future__ import annotations

from typing import Any

from service.training.uci.report import PUBLISHED, _pm

# (RMSE, LL), as printed.
TUNED_2018: dict[str, tuple[float, float]] = {
    "bostonHousing": (2.90, -2.40),
    "concrete": (4.82, -2.93),
    "energy": (0.54, -1.21),
    "kin8nm": (0.08, 1.14),
    "naval-propulsion-plant": (0.00, 4.45),
    "power-plant": (4.01, -2.80),
    "protein-tertiary-structure": (4.27, -2.87),
    "wine-quality-red": (0.62, -0.93),
    "yacht": (0.67, -1.25),
}
DEEP_ENSEMBLE_NLL: dict[str, float] = {
    "bostonHousing": 2.41,
    "concrete": 3.06,
    "energy": 1.38,
    "kin8nm": -1.20,
    "naval-propulsion-plant": -5.63,
    "power-plant": 2.79,
    "protein-tertiary-structure": 2.83,
    "wine-quality-red": 0.94,
    "yacht": 1.18,
}


def compare(dataset: str, summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Verdicts for one dataset's tuned column against the three references."""
    ours = summary["tuned"]
    rmse, ll = round(ours["rmse_mean"], 2), round(ours["ll_mean"], 2)
    out: dict[str, Any] = {}
    if dataset in PUBLISHED:
        (r10, r10_se), (l10, l10_se) = PUBLISHED[dataset]["rmse_10x"], PUBLISHED[dataset]["ll_10x"]
        out["paper_10x"] = {
            "rmse": rmse <= r10 + 2 * r10_se + 1e-9,
            "ll": ll >= l10 - 2 * l10_se - 1e-9,
        }
    if dataset in TUNED_2018:
        r18, l18 = TUNED_2018[dataset]
        out["tuned_2018"] = {"rmse": rmse <= r18 + 1e-9, "ll": ll >= l18 - 1e-9}
    if dataset in DEEP_ENSEMBLE_NLL:
        out["deep_ensembles_nll"] = -ll < DEEP_ENSEMBLE_NLL[dataset] - 1e-9
        if "ensemble" in summary:
            out["our_ensemble_nll"] = -ll < -round(summary["ensemble"]["ll_mean"], 2) - 1e-9
    return out


def counts(verdicts: dict[str, dict[str, Any]]) -> dict[str, str]:
    """'k of n' per comparison, over the datasets that were run."""
    n = len(verdicts)

    def both(v: dict[str, Any], key: str) -> bool:
        return bool(key in v and v[key]["rmse"] and v[key]["ll"])

    def k_of(key: str, test: Any) -> str:
        return f"{sum(1 for v in verdicts.values() if test(v, key))} of {n}"

    return {
        "paper_10x_rmse_and_ll": k_of("paper_10x", both),
        "tuned_2018_rmse_and_ll": k_of("tuned_2018", both),
        "better_nll_than_deep_ensembles": k_of("deep_ensembles_nll", lambda v, k: bool(v.get(k))),
        "better_nll_than_our_ensemble": k_of("our_ensemble_nll", lambda v, k: bool(v.get(k))),
    }


def _published(pub: dict[str, tuple[float, float]], key: str) -> str:
    return _pm(*pub[key], digits=2) if key in pub else "n/a"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | splits | RMSE tuned | RMSE paper 10x | RMSE 2018 | RMSE our ensemble "
        "| NLL tuned | NLL paper 10x | NLL 2018 | NLL deep ens. (pub.) | NLL our ensemble "
        "| wall s |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in results:
        name, s = r["dataset"], r["summary"]
        t = s["tuned"]
        pub = PUBLISHED.get(name, {})
        e = s.get("ensemble")
        r18, l18 = TUNED_2018.get(name, (float("nan"), float("nan")))
        p10_nll = f"{-pub['ll_10x'][0]:.2f} ± {pub['ll_10x'][1]:.2f}" if "ll_10x" in pub else "n/a"
        rows.append(
            f"| {name} | {r['n_splits']} | {_pm(t['rmse_mean'], t['rmse_se'])} "
            f"| {_published(pub, 'rmse_10x')} "
            f"| {r18:.2f} | {_pm(e['rmse_mean'], e['rmse_se']) if e else 'not run'} "
            f"| {_pm(-t['ll_mean'], t['ll_se'])} | {p10_nll} | {-l18:.2f} "
            f"| {DEEP_ENSEMBLE_NLL.get(name, float('nan')):.2f} "
            f"| {_pm(-e['ll_mean'], e['ll_se']) if e else 'not run'} "
            f"| {r['timing_s']['total']:.0f} |"
        )
    return "\n".join(rows)
