"""SSH trust: the ssh options dsas uses and the verified known_hosts of the nodes."""
