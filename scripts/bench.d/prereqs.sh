#!/usr/bin/env bash
# scripts/bench.d/prereqs.sh INSTALL(0|1) PEERS(0|1)
# Checks what the bench needs and, when INSTALL=1, installs what is missing, as
# ../shared/bench/README.md says: Debian's git-lfs (+ rsync, time) via apt-get,
# rudolfs via `cargo install rudolfs --locked` (slow: built once, then reused from
# ~/.cargo/bin), dvc and numpy via pip.  The slow installs run in parallel.
set -euo pipefail
INSTALL=$1 PEERS=$2
log() { echo "[prereqs $(date +%T)] $*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"
missing=()

apt_pkgs=()
command -v rsync >/dev/null || apt_pkgs+=(rsync)
[ -x /usr/bin/time ] || apt_pkgs+=(time)
command -v curl >/dev/null || apt_pkgs+=(curl)
command -v zstd >/dev/null || apt_pkgs+=(zstd)
[ "$PEERS" = 1 ] && ! command -v git-lfs >/dev/null && apt_pkgs+=(git-lfs)
pip_pkgs=()
python3 -c 'import numpy' 2>/dev/null || pip_pkgs+=(numpy)
[ "$PEERS" = 1 ] && ! command -v dvc >/dev/null && pip_pkgs+=(dvc)
need_rudolfs=0
[ "$PEERS" = 1 ] && ! command -v rudolfs >/dev/null && need_rudolfs=1

if [ ${#apt_pkgs[@]} -eq 0 ] && [ ${#pip_pkgs[@]} -eq 0 ] && [ $need_rudolfs = 0 ]; then
  log "all prerequisites present"; exit 0
fi
if [ "$INSTALL" != 1 ]; then
  log "missing: ${apt_pkgs[*]} ${pip_pkgs[*]} $([ $need_rudolfs = 1 ] && echo rudolfs) (--no-install given)"
  exit 1
fi
LOGD=$(mktemp -d); trap 'rm -rf "$LOGD"' EXIT
pids=()
if [ $need_rudolfs = 1 ]; then
  log "cargo install rudolfs --locked (background; several minutes)"
  (cargo install rudolfs --locked >"$LOGD/cargo.log" 2>&1) & pids+=($!)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  log "apt-get install ${apt_pkgs[*]}"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}") >"$LOGD/apt.log" 2>&1 & pids+=($!)
fi
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  log "pip install ${pip_pkgs[*]}"
  (python3 -m pip install -q "${pip_pkgs[@]}") >"$LOGD/pip.log" 2>&1 & pids+=($!)
fi
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
if [ $rc != 0 ]; then
  for f in "$LOGD"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
fi
hash -r
command -v rsync >/dev/null || missing+=(rsync)
[ -x /usr/bin/time ] || missing+=(time)
python3 -c 'import numpy' 2>/dev/null || missing+=(numpy)
if [ "$PEERS" = 1 ]; then
  command -v git-lfs >/dev/null || missing+=(git-lfs)
  command -v dvc >/dev/null || missing+=(dvc)
  command -v rudolfs >/dev/null || missing+=(rudolfs)
fi
[ ${#missing[@]} -eq 0 ] || { log "still missing: ${missing[*]}"; exit 1; }
log "prerequisites installed"
