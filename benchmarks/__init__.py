"""Benchmarks and load tools for darkroom-gpu, run from the repository root as modules."""
