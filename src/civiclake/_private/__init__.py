"""Helpers that are not part of civiclake's public API."""
