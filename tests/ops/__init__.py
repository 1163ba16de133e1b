"""Tests of tasks/ops/."""
