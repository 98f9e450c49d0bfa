"""Benchmarks: each module compares dsas with its real peer in the same run."""
