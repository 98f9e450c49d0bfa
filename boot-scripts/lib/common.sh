# shellcheck shell=sh
# The functions the two boot scripts share: the netboot initramfs's /init (busybox sh)
# and the image's dsas-init (bash) both source this file, so it is POSIX sh. It is
# /lib/dsas/common.sh in the netboot initramfs and /usr/lib/dsas/common.sh in the node
# images (images/*/recipe.toml); the scripts read it from $DSAS_LIB when that is set
# (the tests point it at boot-scripts/lib).
#
# The caller sets SAY_AS, the prefix of its console lines ("dsas", "dsas-init").
# Every function but say runs in a subshell: nothing here sets a variable of the caller.

# The master's limit on a report's text fields (provision/policy/httpfiles.py: printable
# ASCII, at most MAX_REASON characters); a longer or other text is refused as a whole.
EVENT_TEXT_MAX=200

# say TEXT...: one console line, "<SAY_AS>: TEXT" (printf: dash's echo would expand a
# backslash in TEXT)
say() { printf '%s: %s\n' "${SAY_AS:-dsas}" "$*"; }

# json_escape TEXT: TEXT as the inside of a JSON string: a backslash and a quote get a
# backslash, a control character (newline, tab, DEL, ...) becomes \u00XX. Other bytes
# pass as they are.
json_escape() (
    LC_ALL=C
    s=$1 out=''
    while :; do
        plain=${s%%[\"\\[:cntrl:]]*}  # up to the first character that needs escaping
        out=$out$plain
        [ "$plain" = "$s" ] && break
        s=${s#"$plain"}
        rest=${s#?}
        c=${s%"$rest"}
        s=$rest
        case $c in
            \") out="$out\\\"" ;;
            \\) out="$out\\\\" ;;
            *) out=$out$(printf '\\u%04x' "'$c") ;;
        esac
    done
    printf '%s' "$out"
)

# event_text TEXT: TEXT as the master takes it in a report: tabs and line ends become
# spaces, any other byte outside printable ASCII a '?', and at most EVENT_TEXT_MAX
# characters (a longer text ends in "...").
event_text() (
    t=$(printf '%s' "$1" | tr '\t\n\r' '   ' | LC_ALL=C tr -c ' -~' '?')
    if [ "${#t}" -gt "$EVENT_TEXT_MAX" ]; then
        t="$(printf '%s\n' "$t" | cut -c "1-$((EVENT_TEXT_MAX - 3))")..."
    fi
    printf '%s' "$t"
)

# post_event MASTER HOST STAGE DETAIL [EXTRA]: POST {"host", "stage", "detail"} to
# MASTER/api/v1/events (nothing when MASTER is empty); EXTRA is more members, each
# ', "name": "<json_escape'd value>"'. One short try with curl, else wget; a failure is
# said, never fatal. The body goes through a private file, not the command line, where
# the boot token of a ready report would be in every process's view (/proc/*/cmdline).
post_event() (
    [ -n "$1" ] || exit 0
    url=$1/api/v1/events
    body=$(mktemp) || { say "could not report stage '$3': no temporary file"; exit 0; }
    printf '{"host": "%s", "stage": "%s", "detail": "%s"%s}' \
        "$(json_escape "$(event_text "$2")")" "$(json_escape "$3")" \
        "$(json_escape "$(event_text "$4")")" "${5:-}" > "$body"
    sent=1
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 5 -H 'Content-Type: application/json' --data-binary "@$body" \
            "$url" >/dev/null 2>&1 && sent=0
    elif command -v wget >/dev/null 2>&1; then
        # (no wget -T: busybox 1.35's wget crashes with it on a refused connection)
        timeout 5 wget -q -O /dev/null --header 'Content-Type: application/json' \
            --post-file "$body" "$url" >/dev/null 2>&1 && sent=0
    fi
    rm -f "$body"
    [ "$sent" = 0 ] || say "could not report stage '$3' to $url"
)
