"""The LVS directors seen from the master: what keepalived and IPVS report."""
