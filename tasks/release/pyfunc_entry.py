"""The released model's definition (MLflow "models from code"): loading the package runs
this file, so no pickled object stands between the stored files and the model."""

import mlflow
from mlflow.pyfunc import PythonModel

from tasks.release.packaging import DelayPyfunc


class FlightDelayModel(DelayPyfunc, PythonModel):
    """Raw joined rows -> probability and warn flag (tasks/ml/inference.py)."""


mlflow.models.set_model(FlightDelayModel())
