#!/usr/bin/env bash
# Builds dfs, fills two demo tiers and mounts the stock two-tier preset:
#   PSS = $DEMO/pss (fast), SSS = $DEMO/sss (slow), mount point $DEMO/mnt.
# Stays in the foreground; Ctrl-C unmounts. Needs root (or fuse3 for users).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO:-/tmp/dfs-demo}
command -v fusermount3 >/dev/null || { apt-get update -qq && apt-get install -y -qq fuse3; }
cargo install --quiet --path . --root "$DEMO/prefix"
mkdir -p "$DEMO"/{pss,sss,mnt}
mkdir -p "$DEMO/pss/2026" "$DEMO/sss/2024" "$DEMO/sss/2026"
echo "a new document (on PSS)" > "$DEMO/pss/2026/invoice-1001.txt"
echo "an old document (on SSS)" > "$DEMO/sss/2024/invoice-0001.txt"
echo "moved down earlier (on SSS)" > "$DEMO/sss/2026/invoice-0999.txt"
echo "Mounting $DEMO/pss + $DEMO/sss on $DEMO/mnt. Try, in another shell:"
echo "  ls -R $DEMO/mnt; du -s $DEMO/mnt; echo hi > $DEMO/mnt/2026/new.txt; ls $DEMO/pss/2026"
echo "Ctrl-C unmounts."
exec "$DEMO/prefix/bin/dfs" mount "$DEMO/pss" "$DEMO/sss" "$DEMO/mnt"
