"""The model: feature encoding, the network, training, metrics, baselines, plots, and the
one scoring path (inference) that evaluate and the released model share."""
