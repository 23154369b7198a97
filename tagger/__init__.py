"""The tagger library: sources, assembly, training, calibration, prediction, model bundle.

`tagger.predict(inputs, model=...)` is the batch-tagging entry point (see `tagger.inference.api`);
importing the package stays light (no torch until a model is loaded).
"""

from tagger.inference.api import predict

__all__ = ["predict"]
