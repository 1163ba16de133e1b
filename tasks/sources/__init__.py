"""Connectors: each turns one kind of upstream system into a stream of DataFrames.

A connector knows how to talk to its system (SQL, a folder of files, an HTTP API) and
nothing about partitions, manifests or watermark bookkeeping: that is collect's job.
"""


class SourceError(Exception):
    """An upstream system could not be read; the message names the source and the problem."""
