"""mcdrop: MC dropout predictions with calibrated abstention, as a library and a REST service.

from service import load_model
m = load_model("models/diabetes")
p = m.predict(x, samples=100, seed=0)   # p.mean, p.variance, p.uncertainty, p.abstain
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.model import MCDropoutModel, Prediction, load_model

__all__ = ["MCDropoutModel", "Prediction", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (e.g. for the CLI's --help) does not import torch.
    if name in __all__:
        from service import model

        return getattr(model, name)
    raise AttributeError(name)
