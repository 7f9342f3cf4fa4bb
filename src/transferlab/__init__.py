"""transferlab: transfer learning for image classification with Lightning and Hydra."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_classifier"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import transferlab` stays light (no torch import until a model is actually needed).
    if name == "load_classifier":
        from transferlab.inference import load_classifier

        return load_classifier
    raise AttributeError(f"module 'transferlab' has no attribute {name!r}")
