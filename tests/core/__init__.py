"""Tests of tasks/core/."""
