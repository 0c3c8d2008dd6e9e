"""Domain generalization with NeuRN: digit domains, networks, training jobs, results tables."""
