"""Builders of multi-task datasets: real ones from installed packages (BBC News), synthetic ones for tests."""
