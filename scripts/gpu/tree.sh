#!/usr/bin/env bash
# Shrinks the working tree that a device call sends, and puts it back.
#
#     bash scripts/gpu/tree.sh shrink    # before the device calls: artifacts/ leaves the index
#     bash scripts/gpu/tree.sh restore   # right after them, before any commit
#     bash scripts/gpu/tree.sh size      # MiB a device call would send, pieces not counted
#
# A call sends the tracked and untracked-not-ignored files (64 MiB with what it carries);
# artifacts/ (49 MB of shipped bundles, not needed for the GPU benchmark) leaves ~12 MiB
# for a piece. `shrink` untracks it without touching the files (git rm --cached) and has
# .git/info/exclude ignore it; `restore` undoes both. Never commit between the two: the
# commit would delete the shipped bundles.
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude=.git/info/exclude
size() {
  git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 \
    | awk '{printf "tree a device call sends: %.1f MiB\n", $1 / 1048576}'
}
case "${1:-size}" in
  shrink)
    git rm -r -q --cached artifacts
    grep -qx '/artifacts/' "$exclude" 2>/dev/null || echo '/artifacts/' >> "$exclude"
    size; echo "restore with: bash scripts/gpu/tree.sh restore (before any commit)";;
  restore)
    git reset -q -- artifacts
    sed -i '\#^/artifacts/$#d' "$exclude"
    git diff --quiet --cached -- artifacts && git ls-files --error-unmatch artifacts >/dev/null
    size; echo "artifacts/ tracked again";;
  size) size;;
  *) echo "usage: $0 shrink|restore|size" >&2; exit 2;;
esac
