#!/bin/sh
# The web image's own step, after images/common/customize-debian.sh: its role
# services are started by dsas-init when the host's role has them (SERVICE_UNITS).
set -eu
root=$1

systemctl --root="$root" disable lighttpd.service keepalived.service
