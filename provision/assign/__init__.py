"""dsas assign: moving a host to another role (the journal of assigns)."""
