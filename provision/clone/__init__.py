"""dsas-clone: a disk for a new or repaired machine, from an image and the inventory."""
