"""Test launchers shared by tests/ and bench/: never in the wheel nor the Docker image.

Importable from the repository root: pytest's ``pythonpath`` (pyproject.toml), the dev venv's
``.pth`` file (scripts/bootstrap) for the benches, and ``python -m testsupport.X`` from the root.
"""
