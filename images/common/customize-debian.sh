#!/bin/sh
# Customise a Debian image's root tree ($1) after mmdebstrap and the recipe's
# files: no identity in the image, dsas-init enabled, nothing that changes from
# build to build. Shared by the Debian recipes (base, web); each one's own hook,
# run after this one, leaves its role services to dsas-init.
set -eu
root=$1

rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo dsas-unconfigured > "$root/etc/hostname"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
printf '# written by dsas-clone or dsas-init\n' > "$root/etc/fstab"

systemctl --root="$root" enable dsas-init.service ssh.service

# Volatile build leftovers.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
find "$root/var/log" -type f -delete
rm -f "$root/etc/resolv.conf"
