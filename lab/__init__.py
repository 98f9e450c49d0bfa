"""The lab: namespaces, QEMU guests, SSH farms and the lab inventories.

Used by the tests (``tests/``), the benchmarks (``bench/``) and `dsas demo`;
not part of the dsas wheel (pyproject's ``packages.find`` takes ``provision*``
only), so it is there in a source checkout only.

    netns     namespaces, veths, bridges, taps, tracked processes (``Lab``)
    qemu      QEMU guests (TCG) on taps, their serial shell
    cluster   a master namespace running `dsas serve` plus PXE-booting guests
    sshfarm   sshd nodes in namespaces, for push and clone
    vlan      a userspace 802.1Q port (run as its own process)
    clone     the clone tests' image store, inventory, loop devices
    lvs       the load balancer lab: inventory, client loop, direct-kernel boot
    bootfiles the boot-files lab inventory (198.18.4.0/24)
    testing   the pytest side: require_tool/require_root fail the test, wait_for
"""
