"""The released model: one MLflow pyfunc that holds the weights (plain tensors), the model
config, the encoders' vocabularies and scalers and the operating threshold (JSON), and this
package's code. Its `predict` is `tasks.ml.inference.score_rows`, the code evaluate scores
with.

The pyfunc is defined by code (`tasks/release/pyfunc_entry.py`), not a pickle, so loading
it runs no stored bytecode.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.io import read_json, write_json
from tasks.ml.encoders import Encoders
from tasks.ml.features import INPUT
from tasks.ml.inference import plain_rows, score_rows

# The code the model carries: the whole `tasks` package, so the pyfunc needs nothing else.
PACKAGE = Path(__file__).parents[1]
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
# What the pyfunc needs at load time, pinned to the lock file's versions.
REQUIREMENTS = ("mlflow", "torch", "pandas", "numpy", "pydantic", "pyyaml")


def signature():  # -> mlflow.models.ModelSignature
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(kind, name, required=not optional)
                     for name, (kind, optional) in INPUT.items()])  # fmt: skip
    outputs = Schema([ColSpec("double", "probability"), ColSpec("boolean", "warn")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pinned_requirements(lock: Path) -> list[str]:
    """The REQUIREMENTS as the lock file pins them (given, not inferred: inference loads
    the model in a subprocess and takes seconds)."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = line.strip()
    missing = [name for name in REQUIREMENTS if name not in pins]
    if missing:
        raise ValueError(f"{lock} does not pin {', '.join(missing)}")
    return [pins[name] for name in REQUIREMENTS]


def package(
    checkpoint: Path,
    encoders: Path,
    threshold: float,
    example: pd.DataFrame,
    lock: Path,
    destination: Path,
) -> Path:
    """Save the pyfunc model to `destination` (replaced if present)."""
    import logging

    import mlflow
    import torch

    # MLflow announces at INFO that it checks the input example; failures still raise.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)

    from tasks.ml.model import load_checkpoint

    model = load_checkpoint(checkpoint)
    parts = destination.with_name(destination.name + ".parts")
    shutil.rmtree(parts, ignore_errors=True)
    shutil.rmtree(destination, ignore_errors=True)
    parts.mkdir(parents=True)
    torch.save(model.state_dict(), parts / "weights.pt")
    write_json(parts / "model_config.json", asdict(model.config))
    shutil.copyfile(encoders, parts / "encoders.json")
    write_json(parts / "serving.json", {"threshold": threshold})
    try:
        mlflow.pyfunc.save_model(
            path=str(destination),
            python_model=str(ENTRY),
            artifacts={
                name: str(parts / f"{name}.{ext}")
                for name, ext in (
                    ("weights", "pt"),
                    ("model_config", "json"),
                    ("encoders", "json"),
                    ("serving", "json"),
                )
            },
            code_paths=[str(PACKAGE)],
            signature=signature(),
            input_example=plain_rows(example),
            pip_requirements=pinned_requirements(lock),
        )
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return destination


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


class DelayPyfunc:  # subclassed from mlflow.pyfunc.PythonModel in pyfunc_entry.py
    def load_context(self, context: Any) -> None:
        import torch

        from tasks.ml.model import DelayModel, ModelConfig

        files = context.artifacts
        self.model = DelayModel(ModelConfig(**read_json(Path(files["model_config"]))))
        self.model.load_state_dict(torch.load(files["weights"], weights_only=True))
        self.model.eval()
        self.encoders = Encoders.from_json(read_json(Path(files["encoders"])))
        self.threshold = float(read_json(Path(files["serving"]))["threshold"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return score_rows(self.model, self.encoders, self.threshold, model_input)
