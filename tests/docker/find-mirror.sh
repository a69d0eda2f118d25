#!/bin/sh
# Prints the Debian mirror apt already uses for suite $1 (default bookworm): the
# first one-line "deb" entry, then the first deb822 stanza, whose suites include
# exactly that suite (not SUITE-security or SUITE-updates). Shared by the image
# builds next to it (debian/ and postgres/build-image.sh). Prints nothing when
# apt names no such mirror.
set -eu
suite=${1:-bookworm}
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
        }' "$f"
done
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
        BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; uris = ""; suites = ""; enabled = "yes"
            for (j = 1; j <= NF; j++) {
                if ($j ~ /^Types:/) types = $j
                else if ($j ~ /^URIs:/) uris = $j
                else if ($j ~ /^Suites:/) suites = $j
                else if ($j ~ /^Enabled:/) enabled = $j
            }
            if (enabled ~ /no$/) next
            if (types !~ /[ \t]deb([ \t]|$)/) next
            if (suites !~ ("[ \t]" suite "([ \t]|$)")) next
            sub(/^URIs:[ \t]*/, "", uris)
            split(uris, u, /[ \t]+/)
            print u[1]
            exit
        }' "$f"
done
