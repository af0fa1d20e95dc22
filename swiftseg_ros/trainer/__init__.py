"""Offline training: datasets, synthetic scenes, evaluation, the training loop and export."""
