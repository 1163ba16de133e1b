"""Tests of tasks/release/."""
