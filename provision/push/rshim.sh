# shellcheck shell=bash
# dsas-push: rsync's remote shell when rsync rides dsas-push's paramiko connection.
#
# rsync runs:  bash --norc --noprofile rshim.sh REQ REP [-l USER] HOST COMMAND...
# REQ and REP are pipe descriptors dsas-push gave rsync (see tunnel.py). This
# shell duplicates its standard input, output and error to new descriptors (a
# builtin's redirection, as in the echo below, swaps 0-2 for a moment) and tells
# dsas-push its PID and their numbers on REQ; dsas-push reads HOST and COMMAND
# from /proc/PID/cmdline and takes copies of the three (pidfd_getfd), then
# answers "ok" on REP. The shell closes its own
# copies (so rsync sees the end of the stream when the node's rsync ends) and
# waits for the remote command's exit status on REP, which becomes its own:
# rsync sees what it would have seen from ssh. If dsas-push goes away, REP ends
# and this shell exits 255, as ssh does when the connection is lost.
req=$1 rep=$2
case $req$rep in *[!0-9]*|'') echo "rshim: usage: rshim.sh REQ REP HOST COMMAND..." >&2; exit 2;; esac
exec {fi}<&0 {fo}>&1 {fe}>&2
# shellcheck disable=SC2261  # $req is digits (checked above): >& duplicates that descriptor
echo "$$ $fi $fo $fe" >&"$req" 2>/dev/null || { echo "rshim: dsas-push is not listening" >&2; exit 255; }
read -r -u "$rep" reply || { echo "rshim: dsas-push went away" >&2; exit 255; }
if [ "$reply" != ok ]; then echo "rshim: $reply" >&2; exit 255; fi
exec 0<&- 1>&- 2>&- {fi}<&- {fo}>&- {fe}>&-
read -r -u "$rep" status
case $status in ''|*[!0-9]*) exit 255;; esac
exit "$status"
