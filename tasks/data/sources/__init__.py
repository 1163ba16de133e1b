"""Connectors: each turns one kind of upstream system into a stream of DataFrames.

A connector knows how to talk to its system (SQL, a folder of files, an HTTP API) and
nothing about partitions, manifests or watermark bookkeeping: that is collect's job.
"""

# A connector that receives a value which does not fit its column's declared type (SQLite
# keeps text in a REAL column) does not stop: the value becomes null in its typed column,
# and this column holds the raw text as JSON {column: text}; validate quarantines the row
# with a reason naming the column.
INVALID = "_invalid"
