"""Benchmarks: contenders run side by side in one run, reported as ratios (see each module)."""
