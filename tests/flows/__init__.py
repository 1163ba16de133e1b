"""Tests of flows/: the flow, its stages, the local server, the CLI."""
