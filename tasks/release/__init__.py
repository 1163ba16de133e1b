"""The gated release through the MLflow Model Registry: the run (run.py), the gate, the
packaged pyfunc, the smoke test, the registry, recovery of what a killed run left, and
batch prediction with the champion."""
