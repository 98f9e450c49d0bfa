"""`dsas rollout IMAGE@VERSION` (issue 23): move hosts from one image version to the next
on a live farm, batch by batch, drained and verified, stopping at the first failures."""
