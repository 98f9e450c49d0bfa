#!/bin/sh
# The web image's own step, after images/common/customize-debian.sh: its role
# services are started by dsas-init when the host's role has them (SERVICE_UNITS).
set -eu
root=$1

systemctl --root="$root" disable lighttpd.service keepalived.service
# uftpd runs only as dsas-init starts it (its address, group, port and root, encrypted
# sessions only): the package's daemon, listening on every interface into /tmp for any
# sender, never starts
systemctl --root="$root" disable uftp.service
systemctl --root="$root" mask uftp.service
rm -f "$root/etc/rc"?.d/[SK]??uftp
