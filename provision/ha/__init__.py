"""Two masters, no single point of failure (issue 18): the pair at run time (``pair``)
and its replication channel (``wire``)."""
