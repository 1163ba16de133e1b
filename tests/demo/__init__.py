"""Tests of tasks/demo/."""
