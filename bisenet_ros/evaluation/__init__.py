"""Measuring a model: evaluating a recording (bag) against ground truth, the metrics, and the report."""
