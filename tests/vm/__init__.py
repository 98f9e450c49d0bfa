"""The vm tier (see tests/conftest.py)."""
