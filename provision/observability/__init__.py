"""Logging set-up, metrics and per-host status."""
