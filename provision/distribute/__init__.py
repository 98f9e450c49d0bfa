"""distribute layer."""
