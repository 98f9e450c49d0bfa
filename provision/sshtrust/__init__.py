"""SSH trust: the ssh options dsas uses and the verified known_hosts of the nodes.

The defaults are here, not in ``sshconf``, so that the CLI can declare its SSH
options without importing paramiko."""

DEFAULT_USER = "root"
DEFAULT_PORT = 22
