"""mcdrop: MC dropout predictions with calibrated abstention, as a library and a REST service.

from service import load_model
m = load_model("models/diabetes")
p = m.predict(x, samples=100, seed=0)   # p.mean, p.variance, p.uncertainty, p.abstain
# p is a RegressionResult or a ClassificationResult (p.label, p.probabilities, ...)

from service import package_torch        # serve your own nn.Module (docs/bring-your-own.md)
package_torch(net, x[:8], "models/mynet", task="classification")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.serving.model import MCDropoutModel, Prediction, load_model
    from service.serving.results import ClassificationResult, RegressionResult
    from service.training.packaging import import_onnx
    from service.training.torch_package import package_torch

__all__ = [
    "ClassificationResult",
    "MCDropoutModel",
    "Prediction",
    "RegressionResult",
    "import_onnx",
    "load_model",
    "package_torch",
]
_HOMES = {
    "ClassificationResult": "service.serving.results",
    "RegressionResult": "service.serving.results",
    "package_torch": "service.training.torch_package",
    "import_onnx": "service.training.packaging",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (e.g. for the CLI's --help) does not import torch.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module(_HOMES.get(name, "service.serving.model")), name)
    raise AttributeError(name)
