"""Ablations: a grid file of variants (named config overrides) x seeds, run cell by cell as real
train_net + test_net processes (tools/ablate.py), with the statistics over seeds and the report."""
