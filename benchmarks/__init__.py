"""Benchmarks of darkroom-gpu: in-process manipulators, HTTP servers and peer servers."""
