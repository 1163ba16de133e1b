"""Tests of tasks/data/."""
