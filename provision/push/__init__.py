"""dsas-push: staged, verified, atomic releases to the nodes (rsync or uftp multicast)."""
