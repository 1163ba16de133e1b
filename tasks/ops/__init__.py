"""Operating the pipeline: the status report and the retrain policy."""
