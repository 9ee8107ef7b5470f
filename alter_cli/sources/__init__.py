"""Builders of multi-task datasets (synthetic for tests; real corpora from installed packages)."""
