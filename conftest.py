"""Root conftest: makes the checkout's packages importable ahead of any installed copy."""
