"""Data in: the source connectors, partitions and their manifests, schemas, integrity
checks and repair."""
