"""The lowest layer: errors, params, paths, file I/O, locks, process entry, logging,
progress, secrets, MLflow connection, intent records, the process guard. Imports nothing
else of this project (checked by import-linter, `make check`)."""
