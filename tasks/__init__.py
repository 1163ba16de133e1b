"""Plumber's steps and their building blocks. Never imports Prefect."""
