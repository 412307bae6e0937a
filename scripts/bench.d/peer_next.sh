#!/usr/bin/env bash
# scripts/bench.d/peer_next.sh TOOL WORKLOAD_DIR SCRATCH
#
# The phases the shared peer scripts do not have, run on what they leave behind (they
# are run with KEEP=1): a clone that materialises v1, then each later version pulled
# into that clone one at a time -- git-model's "clone" and "pull_next" phases
# (scripts/bench.d/gitmodel.sh), for git-lfs (+ rudolfs) and DVC.
#
#   TOOL     gitlfs | dvc
#   SCRATCH  the scratch dir of ../shared/bench/peer_<TOOL>.sh for this workload and run:
#            its server/remote.git holds v1..vN (one commit each) and its store
#            (server/lfs: rudolfs' directory; server/dvc-store: the DVC remote)
#
# Flow, in SCRATCH/inc (removed first), hermetic config as in the peer scripts:
#   git-lfs: rudolfs restarted on a free loopback port over the same directory (the
#            clone's lfs.url points at it); clone  = `git clone --no-checkout` +
#            `git checkout` of the v1 commit (the git-lfs smudge filter downloads);
#            pull_next = `git merge --ff-only` of the vk commit (smudge downloads vk).
#   DVC:     clone = `git clone` + `git checkout` of v1 + `dvc pull`;
#            pull_next = `git merge --ff-only` of the vk commit + `dvc pull`.
# The clone holds every commit already, so a pull moves only the tool's content (git's
# own fetch of a few small commits is left out; git-model's pull_next includes it).
# Every version is verified byte for byte (diff -r against vk).
#
# One JSON line per phase on stdout, in the peer scripts' schema ("tool":"git-lfs" or
# "dvc"), with verified, clone_git_bytes, clone_cache_bytes (DVC: .dvc/cache) and
# clone_tree_bytes.  Installs nothing; needs git, python3, curl, /usr/bin/time, and
# git-lfs + rudolfs (RUDOLFS, RUDOLFS_KEY as the peer script used) or dvc.
set -euo pipefail

die() { echo "peer_next: $*" >&2; exit 1; }
[ $# -eq 3 ] || die "usage: $0 gitlfs|dvc WORKLOAD_DIR SCRATCH"
TOOLARG=$1
WL_DIR=$(realpath "$2")
SCRATCH=$(realpath "$3")
WL=$(basename "$WL_DIR")
RUN=${RUN:-1}
REMOTE="$SCRATCH/server/remote.git"
INC="$SCRATCH/inc"
[ -d "$REMOTE" ] || die "$REMOTE missing (run the peer script with KEEP=1 first)"
NV=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["n_versions"])' "$WL_DIR/manifest.json")
GIT_VERSION=$(git --version | awk '{print $3}')

export GIT_CONFIG_GLOBAL="$SCRATCH/gitconfig" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
export RSS_LOG="$SCRATCH/next_rss.log"
SERVER_PID=""
case "$TOOLARG" in
  gitlfs)
    TOOL=git-lfs SERVER_KIND=rudolfs STORE="$SCRATCH/server/lfs"
    RUDOLFS=${RUDOLFS:-$(command -v rudolfs || echo "$HOME/.cargo/bin/rudolfs")}
    GIT_LFS_BIN=$(command -v git-lfs) || die "missing git-lfs"
    TOOL_VERSION="git-$GIT_VERSION $("$GIT_LFS_BIN" version | awk '{print $1}') rudolfs-$("$RUDOLFS" --version 2>/dev/null | awk '{print $2}')"
    # the peer script's RSS shim, logging into our file
    mkdir -p "$SCRATCH/next_shim"
    printf '#!/bin/sh\nexec /usr/bin/time -a -o "$RSS_LOG" -f "RSS %%M" "%s" "$@"\n' "$GIT_LFS_BIN" \
      > "$SCRATCH/next_shim/git-lfs"
    chmod +x "$SCRATCH/next_shim/git-lfs"
    export PATH="$SCRATCH/next_shim:$PATH"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    RARGS=(--host "127.0.0.1:$PORT" --log-level warn)
    [ -n "${RUDOLFS_KEY:-}" ] && RARGS+=(--key "$RUDOLFS_KEY")
    "$RUDOLFS" "${RARGS[@]}" local --path "$STORE" >"$SCRATCH/next_rudolfs.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
      curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
      kill -0 "$SERVER_PID" 2>/dev/null || die "rudolfs exited: $(cat "$SCRATCH/next_rudolfs.log")"
      sleep 0.1
    done
    LFS_URL="http://127.0.0.1:$PORT/api/bench/$WL"
    ;;
  dvc)
    TOOL=dvc SERVER_KIND=local-dir STORE="$SCRATCH/server/dvc-store"
    export DVC_NO_ANALYTICS=1 DVC_GLOBAL_CONFIG_DIR="$SCRATCH/dvc-global" \
      DVC_SYSTEM_CONFIG_DIR="$SCRATCH/dvc-system" DVC_SITE_CACHE_DIR="$SCRATCH/dvc-site"
    TOOL_VERSION="git-$GIT_VERSION dvc-$(dvc --version 2>/dev/null | tail -1)"
    ;;
  *) die "unknown tool $TOOLARG" ;;
esac
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

HERE=$(cd "$(dirname "$0")" && pwd)
MEASURE_RSS_LOG=$RSS_LOG
. "$HERE/measure.sh"
vbytes() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["versions"][int(sys.argv[2])-1]["logical_bytes"])' "$WL_DIR/manifest.json" "$1"; }
# peak RSS of the tool's own processes: git-lfs through the shim, dvc: the dvc command
tool_rss() {
  if [ "$TOOL" = git-lfs ]; then shim_rss; else echo "$DVC_RSS"; fi
}
emit() { # phase version verified
  local sg ss
  sg=$(dub "$REMOTE"); ss=$(dub "$STORE")
  printf '{"tool":"%s","tool_version":"%s","server":"%s","workload":"%s","run":"%s","phase":"%s","version":%s,"wall_s":%s,"server_bytes":%s,"server_store_bytes":%s,"server_git_bytes":%s,"client_git_bytes":%s,"peak_rss_kb":%s,"tree_peak_rss_kb":%s,"server_peak_rss_kb":%s,"cpu_s":%s,"server_cpu_s":%s,"other_cpu_s":%s,"load1":%s,"logical_bytes":%s,"verified":%s,"clone_git_bytes":%s,"clone_cache_bytes":%s,"clone_tree_bytes":%s}\n' \
    "$TOOL" "$TOOL_VERSION" "$SERVER_KIND" "$WL" "$RUN" "$1" "$2" "$WALL" $((sg + ss)) "$ss" "$sg" \
    "$(dub "$INC/.git")" "$(tool_rss)" "$TRSS" "$(srv_rss)" "$CPU_S" "$SRV_CPU_S" "$OTHER_CPU_S" "$LOAD1" \
    "$(vbytes "$2")" "$3" "$(dub "$INC/.git")" "$(dub "$INC/.dvc/cache")" "$(dub "$INC/data")"
}
verify() { if diff -rq "$WL_DIR/v$1" "$INC/data" >&2; then echo true; else echo false; fi; }
# the commit of version k: the peer scripts commit each version with message "vk"
commit_of() { git -C "$REMOTE" log --format=%H --grep="^v$1\$" main | head -n1; }
DVC_RSS=0
dvc_pull() { # dvc pull, keeping the max RSS of the dvc process
  tcmd dvc pull -q
  local r; r=$(awk '{print $1}' "$SCRATCH/t.$TN"); [ "$r" -gt "$DVC_RSS" ] && DVC_RSS=$r
  return 0
}

rm -rf "$INC"
V1=$(commit_of 1); [ -n "$V1" ] || die "no commit v1 in $REMOTE"
phase_begin; DVC_RSS=0
if [ "$TOOL" = git-lfs ]; then
  tcmd git clone -q --no-checkout "$REMOTE" "$INC"
  git -C "$INC" config lfs.url "$LFS_URL"
  git -C "$INC" config "lfs.$LFS_URL.locksverify" false
  cd "$INC"; tcmd git checkout -q "$V1"
else
  tcmd git clone -q --no-checkout "$REMOTE" "$INC"
  cd "$INC"; tcmd git checkout -q "$V1"; dvc_pull
fi
phase_end
emit clone 1 "$(verify 1)"
for k in $(seq 2 "$NV"); do
  VK=$(commit_of "$k"); [ -n "$VK" ] || die "no commit v$k in $REMOTE"
  phase_begin; DVC_RSS=0
  tcmd git merge -q --ff-only "$VK"
  [ "$TOOL" = dvc ] && dvc_pull
  phase_end
  emit pull_next "$k" "$(verify "$k")"
done
