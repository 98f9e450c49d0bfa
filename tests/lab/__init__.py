"""The lab tier (see tests/conftest.py)."""
