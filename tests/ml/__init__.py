"""Tests of tasks/ml/."""
