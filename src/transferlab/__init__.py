"""transferlab: transfer learning for image classification with Lightning and Hydra."""

__version__ = "0.1.0"
