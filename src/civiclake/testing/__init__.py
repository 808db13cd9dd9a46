"""The Socrata replay server, public as a tool for source authors (README "Architecture").

The test launchers (PostgreSQL, emulators, dockerd, Chromium, Prefect) live in the repository's
``testsupport/`` package, which the wheel and the Docker image leave out.
"""
