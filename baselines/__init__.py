"""Baseline methods; each package reads like its paper. Reached from harness by registry name only."""
