"""MLflow "models from code" entry for the tagger pyfunc (see `tagger.bundle.registry`).

MLflow stores this file with each logged model and runs it at load time to build the model, so
loading never unpickles anything. Not meant to be imported by other code.
"""

import mlflow

from tagger.bundle.registry import TaggerPyfunc

mlflow.models.set_model(TaggerPyfunc())
