#!/usr/bin/env bash
# scripts/bench.d/gitmodel.sh WORKLOAD_DIR
#
# The git-model side of ../shared/bench/peer_gitlfs.sh: the same flow, the same
# measurement conventions and the same JSON line schema, so the three tools compare
# line for line.  WORKLOAD_DIR is one workload written by gen_workloads.py (v1..vN
# snapshot dirs + manifest.json).
#
# Flow: bare git remote + git-model-server (--listen 127.0.0.1:0, its default local
# store in a scratch --data-dir); a hermetic global git config with `git model install`;
# client repo with `git model track` (patterns from manifest.json "lfs_track") and
# model.url in a committed .gitmodel.  For each version k:
#   add_commit  rsync vk/ into client/data/ (untimed), `git add -A && git commit`
#   push        `git push` (the pre-push hook uploads the chunks the server lacks)
#   clone       (k = 1 only) a plain `git clone` that materialises files through the
#               smudge filter; this clone is kept ("incremental clone")
#   pull_next   (k >= 2) `git pull --ff-only` of version k into the incremental clone
#               (fetches only the chunks it lacks, smudges the changed files)
#   clone_direct, pull_next_direct: the same two through the direct path, in a second
#               clone: `GIT_MODEL_SKIP_SMUDGE=1 git clone` / `git pull`, then
#               `git model pull` (which writes the files itself)
# and finally, like the peers, a fresh `GIT_MODEL_SKIP_SMUDGE=1 git clone` +
# `git model pull` of the last version (clone_pull).  Every clone / pull is verified
# (untimed) byte for byte against vk (diff -r) and against manifest.json's sha256s.
#
# One JSON line per phase on stdout (logs on stderr), the peer_gitlfs.sh fields:
#   tool, tool_version, server, workload, run, phase, version, wall_s,
#   server_bytes (= server_store_bytes + server_git_bytes, apparent, du -sb),
#   server_store_bytes (git-model-server data dir), server_git_bytes (bare repo),
#   server_disk_bytes (du -sk * 1024 of both), client_git_bytes (client .git incl. the
#   local chunk store .git/model), peak_rss_kb (max RSS of any git-model process in the
#   phase, via a /usr/bin/time shim on PATH), tree_peak_rss_kb (max RSS of any process in
#   the phase's process tree), server_peak_rss_kb (git-model-server VmHWM so far),
#   cpu_s (user+sys CPU of the phase's process tree), server_cpu_s (server CPU during the
#   phase), other_cpu_s (CPU burnt by anything else on the machine: noise), load1,
#   logical_bytes (this version);
# plus client_store_bytes (.git/model), and per phase: clone/pull lines add verified,
#   clone_git_bytes, clone_tree_bytes; clone_pull adds clone_s / pull_s.
#
# Installs nothing.  Prerequisites: git, rsync, python3, /usr/bin/time, and the release
# binaries (GIT_MODEL_BIN, GIT_MODEL_SERVER_BIN; default target/release/ of this repo).
# Env: RUN (label, default 1), SCRATCH (default /tmp/bench/scratch/gitmodel-WL-RUN),
#      KEEP=1 keeps the scratch dir, BENCH_PIDFILE (the server's PID is appended there so
#      the caller can stop it even if this script is killed),
#      GM_S3_ENV: an env file as scripts/garage writes it; the server then keeps its objects
#      under a fresh prefix of that bucket (`--store s3://BUCKET/bench/...`, the AWS_*
#      variables for the server process only) instead of the scratch --data-dir; the lines
#      say "tool":"git-model-s3", server_store_bytes is the prefix's object bytes (listed
#      with s3.py) and the prefix is deleted at exit.
set -euo pipefail

die() { echo "gitmodel.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 WORKLOAD_DIR"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=${BENCH_REPO_ROOT:-$(cd "$HERE/../.." && pwd)}
WL_DIR=$(realpath "$1")
[ -f "$WL_DIR/manifest.json" ] || die "$WL_DIR/manifest.json missing (run gen_workloads.py)"
WL=$(basename "$WL_DIR")
RUN=${RUN:-1}
SCRATCH=${SCRATCH:-/tmp/bench/scratch/gitmodel-$WL-$RUN}
GM_BIN=$(realpath "${GIT_MODEL_BIN:-$REPO_ROOT/target/release/git-model}")
SRV_BIN=$(realpath "${GIT_MODEL_SERVER_BIN:-$REPO_ROOT/target/release/git-model-server}")

for c in git python3 rsync; do command -v $c >/dev/null || die "missing $c"; done
[ -x /usr/bin/time ] || die "missing /usr/bin/time (apt-get install time)"
[ -x "$GM_BIN" ] || die "missing $GM_BIN (cargo build --release --bins)"
[ -x "$SRV_BIN" ] || die "missing $SRV_BIN (cargo build --release --bins)"

MANIFEST="$WL_DIR/manifest.json"
NV=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["n_versions"])' "$MANIFEST")
TRACK=$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1])).get("lfs_track",["*"])))' "$MANIFEST")
GIT_VERSION=$(git --version | awk '{print $3}')
GM_VERSION=$("$GM_BIN" --version | awk '{print $2}')
# GIT_MODEL_REV: set by scripts/bench when it snapshots the binaries (commit, build time)
GM_COMMIT=${GIT_MODEL_REV:-$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
TOOL_VERSION="git-$GIT_VERSION git-model-$GM_VERSION ($GM_COMMIT)"
TOOL=git-model SERVER_KIND=git-model-server S3_PREFIX=""
if [ -n "${GM_S3_ENV:-}" ]; then
  [ -f "$GM_S3_ENV" ] || die "GM_S3_ENV=$GM_S3_ENV: no such env file (run scripts/garage)"
  GM_S3_ENV=$(realpath "$GM_S3_ENV")
  S3_BUCKET=$(sed -n "s/^export GIT_MODEL_TEST_S3_BUCKET=//p" "$GM_S3_ENV" | tr -d "'\"")
  [ -n "$S3_BUCKET" ] || die "$GM_S3_ENV sets no GIT_MODEL_TEST_S3_BUCKET"
  S3_PREFIX="bench/$WL-$RUN-$(date +%s)-$$"
  TOOL=git-model-s3 SERVER_KIND="git-model-server (S3)"
fi

rm -rf "$SCRATCH"; mkdir -p "$SCRATCH"/{server/data,shim}
REMOTE="$SCRATCH/server/remote.git"
STORE="$SCRATCH/server/data"
CLIENT="$SCRATCH/client"
CLONE="$SCRATCH/clone"        # fresh pointer-only clone + git model pull (clone_pull)
INC="$SCRATCH/inc"            # clone of v1 that pulls every later version (pull_next)
INC2="$SCRATCH/inc-direct"    # the same through `git model pull` (pull_next_direct)
export GM_RSS_LOG="$SCRATCH/gm_rss.log"

# --- isolated git config (never touches ~/.gitconfig or /etc/gitconfig)
export HOME="$SCRATCH" GIT_CONFIG_GLOBAL="$SCRATCH/gitconfig" GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
unset GIT_MODEL_SKIP_SMUDGE GIT_DIR GIT_WORK_TREE
: > "$GIT_CONFIG_GLOBAL"
git config --global user.name bench
git config --global user.email bench@example.invalid
git config --global init.defaultBranch main
git config --global advice.detachedHead false
git config --global pull.rebase false

# --- git-model shim: records max RSS of every git-model process (filter-process,
# pre-push hook, `git model pull`); git finds `git-model` through PATH for all three.
cat > "$SCRATCH/shim/git-model" <<EOF
#!/bin/sh
exec /usr/bin/time -a -o "\$GM_RSS_LOG" -f 'RSS %M' "$GM_BIN" "\$@"
EOF
chmod +x "$SCRATCH/shim/git-model"
export PATH="$SCRATCH/shim:$PATH"
(cd "$SCRATCH" && git model install --skip-repo >/dev/null)  # filter.model.* into the isolated global config

# --- server: bare git repo + git-model-server on 127.0.0.1, port picked by the server
git init -q --bare "$REMOTE"
STORE_ARGS=()
[ -n "$S3_PREFIX" ] && STORE_ARGS=(--store "s3://$S3_BUCKET/$S3_PREFIX")
# the AWS_* variables (S3 runs) reach the server process only; exec keeps its PID
( [ -n "$S3_PREFIX" ] && { set -a; . "$GM_S3_ENV"; set +a; }
  RUST_LOG=${RUST_LOG:-warn} exec "$SRV_BIN" --listen 127.0.0.1:0 --data-dir "$STORE" "${STORE_ARGS[@]}" ) \
  >"$SCRATCH/server.out" 2>"$SCRATCH/server.log" &
SERVER_PID=$!
[ -n "${BENCH_PIDFILE:-}" ] && echo "$SERVER_PID" >> "$BENCH_PIDFILE"
cleanup() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  if [ -n "$S3_PREFIX" ]; then python3 "$HERE/s3.py" "$GM_S3_ENV" rm "$S3_PREFIX/" >&2 || true; fi
  if [ -s "$SCRATCH/server.log" ]; then
    echo "gitmodel.sh: server log (last lines):" >&2; tail -n 20 "$SCRATCH/server.log" >&2 || true
  fi
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
ADDR=""
for _ in $(seq 1 200); do
  ADDR=$(sed -n 's/^git-model-server listening on \(http:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$SCRATCH/server.out" | head -n1)
  [ -n "$ADDR" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "git-model-server exited: $(cat "$SCRATCH/server.log")"
  sleep 0.05
done
[ -n "$ADDR" ] || die "git-model-server did not announce a 127.0.0.1 address: $(cat "$SCRATCH/server.out")"
MODEL_URL="$ADDR/bench/$WL"
echo "gitmodel.sh: $WL ($NV versions, track: $TRACK) server pid $SERVER_PID at $MODEL_URL${S3_PREFIX:+ on s3://$S3_BUCKET/$S3_PREFIX}, scratch $SCRATCH" >&2

# --- helpers (same conventions as peer_gitlfs.sh)
MEASURE_RSS_LOG=$GM_RSS_LOG
. "$HERE/measure.sh"
gm_rss() { shim_rss; }
vbytes() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["versions"][int(sys.argv[2])-1]["logical_bytes"])' "$MANIFEST" "$1"; }
# bytes the server stores: its data dir, or the objects below its bucket prefix (S3 runs)
store_bytes() {
  if [ -n "$S3_PREFIX" ]; then python3 "$HERE/s3.py" "$GM_S3_ENV" du "$S3_PREFIX/" | cut -d' ' -f1
  else dub "$STORE"; fi
}
emit() { # phase version [extra json fields]
  local sg ss sd
  sg=$(dub "$REMOTE"); ss=$(store_bytes)
  sd=$(duk "$REMOTE" "$STORE"); [ -n "$S3_PREFIX" ] && sd=$((sd + ss))
  printf '{"tool":"%s","tool_version":"%s","server":"%s","workload":"%s","run":"%s","phase":"%s","version":%s,"wall_s":%s,"server_bytes":%s,"server_store_bytes":%s,"server_git_bytes":%s,"server_disk_bytes":%s,"client_git_bytes":%s,"client_store_bytes":%s,"peak_rss_kb":%s,"tree_peak_rss_kb":%s,"server_peak_rss_kb":%s,"cpu_s":%s,"server_cpu_s":%s,"other_cpu_s":%s,"load1":%s,"logical_bytes":%s%s}\n' \
    "$TOOL" "$TOOL_VERSION" "$SERVER_KIND" "$WL" "$RUN" "$1" "$2" "$WALL" $((sg + ss)) "$ss" "$sg" "$sd" \
    "$(dub "$CLIENT/.git")" "$(dub "$CLIENT/.git/model")" "$(gm_rss)" "$TRSS" "$(srv_rss)" "$CPU_S" "$SRV_CPU_S" "$OTHER_CPU_S" "$LOAD1" "$(vbytes "$2")" "${3:-}"
}
# verify DIR K -> true/false: byte for byte against vK (diff -r) and the manifest's sha256s
verify() {
  if diff -rq "$WL_DIR/v$2" "$1/data" >&2 \
     && python3 "$HERE/verify_tree.py" "$MANIFEST" "$2" "$1/data" >&2; then
    echo true
  else
    echo "gitmodel.sh: VERIFY FAILED: $1/data is not v$2" >&2
    echo false
  fi
}

# --- client repo
git init -q "$CLIENT"
cd "$CLIENT"
git remote add origin "$REMOTE"
for p in $TRACK; do git model track "$p" >/dev/null; done
git config -f .gitmodel model.url "$MODEL_URL"
git add .gitattributes .gitmodel
git commit -q -m "git-model setup"
mkdir -p data

for k in $(seq 1 "$NV"); do
  rsync -a --delete --checksum "$WL_DIR/v$k/" "$CLIENT/data/"
  cd "$CLIENT"
  phase_begin
  tcmd git add -A
  tcmd git commit -q -m "v$k"
  phase_end
  emit add_commit "$k"
  phase_begin
  tcmd git push -q origin main
  phase_end
  emit push "$k"
  if [ "$k" -eq 1 ]; then
    # a plain clone: git checks the files out through the smudge filter
    rm -rf "$INC"
    cd "$SCRATCH"
    phase_begin
    tcmd git clone -q "$REMOTE" "$INC"
    phase_end
    OK=$(verify "$INC" 1)
    emit clone 1 ",\"verified\":$OK,\"clone_git_bytes\":$(dub "$INC/.git"),\"clone_tree_bytes\":$(dub "$INC/data")"
    # the direct path: pointers from git, content written by `git model pull`
    rm -rf "$INC2"
    phase_begin
    tcmd env GIT_MODEL_SKIP_SMUDGE=1 git clone -q "$REMOTE" "$INC2"
    cd "$INC2"
    tcmd git model pull
    phase_end
    OK=$(verify "$INC2" 1)
    emit clone_direct 1 ",\"verified\":$OK,\"clone_git_bytes\":$(dub "$INC2/.git"),\"clone_tree_bytes\":$(dub "$INC2/data")"
  else
    cd "$INC"
    phase_begin
    tcmd git pull -q --ff-only origin main
    phase_end
    OK=$(verify "$INC" "$k")
    emit pull_next "$k" ",\"verified\":$OK,\"clone_git_bytes\":$(dub "$INC/.git"),\"clone_tree_bytes\":$(dub "$INC/data")"
    cd "$INC2"
    phase_begin
    tcmd env GIT_MODEL_SKIP_SMUDGE=1 git pull -q --ff-only origin main
    tcmd git model pull
    phase_end
    OK=$(verify "$INC2" "$k")
    emit pull_next_direct "$k" ",\"verified\":$OK,\"clone_git_bytes\":$(dub "$INC2/.git"),\"clone_tree_bytes\":$(dub "$INC2/data")"
  fi
done

# --- fresh pointer-only clone + git model pull of the last version (the peers' clone_pull)
rm -rf "$CLONE"
cd "$SCRATCH"
phase_begin
tcmd env GIT_MODEL_SKIP_SMUDGE=1 git clone -q "$REMOTE" "$CLONE"
T1=$(now)
cd "$CLONE"
tcmd git model pull
phase_end
CLONE_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.3f", b-a}')
PULL_S=$(awk -v a="$T1" -v w="$WALL" -v t0="$T0" 'BEGIN{printf "%.3f", w-(a-t0)}')
OK=$(verify "$CLONE" "$NV")
emit clone_pull "$NV" ",\"clone_s\":$CLONE_S,\"pull_s\":$PULL_S,\"verified\":$OK,\"clone_git_bytes\":$(dub "$CLONE/.git"),\"clone_tree_bytes\":$(dub "$CLONE/data")"
