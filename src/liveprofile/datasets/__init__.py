"""Datasets for tests, demos and benchmarks: a synthetic e-commerce generator."""
