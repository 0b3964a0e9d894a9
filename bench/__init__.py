"""Benchmarks: every figure measured side by side with its baseline, in the same run."""
