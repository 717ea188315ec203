"""Training, evaluation, feature extraction, checkpoints and process-group handling."""
