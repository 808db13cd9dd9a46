"""Test doubles (a local Socrata server) shared by the test suite and the benchmarks."""
