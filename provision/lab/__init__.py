"""The lab: namespaces and QEMU guests, for the tests and `dsas demo`."""
