"""Lineage: the record each candidate leaves in the shared stores (its data in the DVC
remote, its code, params and dvc.lock in its MLflow run), and reading it back. The commands
that follow a record, `plumber lineage` and `plumber reproduce`, are in tasks/ops/."""
