#!/usr/bin/env bash
# scripts/bench.d/big.sh [GIB]: peak memory of git-model on one large file.
#
# Makes a GIB GiB file of random bytes (default 8) in a scratch repository, then times
# `git add`, `git push` (pre-push hook upload) and, in a pointer-only clone, `git model
# pull`, each under /usr/bin/time (peak RSS = the largest process of the step: git or
# git-model), and reads the server's VmHWM. The pulled file is checked with sha256sum.
# Needs about 3 x GIB GiB of disk at once: the source repository is removed before the
# clone. Uses target/release binaries (cargo build --release --bins).
set -euo pipefail
GIB=${1:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GIT_MODEL_BIN_DIR:-$ROOT/target/release}
B=$(mktemp -d "${TMPDIR:-/tmp}/git-model-big.XXXXXX")
SP=
cleanup() { [ -n "$SP" ] && kill "$SP" 2>/dev/null; rm -rf "$B"; }
trap cleanup EXIT
export PATH=$BIN:$PATH HOME=$B/home GIT_CONFIG_NOSYSTEM=1 GIT_MODEL_QUIET=1
mkdir -p "$HOME"
git config --global user.name bench; git config --global user.email bench@example.invalid
git config --global init.defaultBranch main
git model install >/dev/null
git init -q --bare "$B/origin.git"
git-model-server --data-dir "$B/srv" --listen 127.0.0.1:0 > "$B/srv.log" 2>&1 &
SP=$!
for _ in $(seq 100); do grep -q "listening on" "$B/srv.log" && break; sleep 0.1; done
URL=$(grep -o "http://[0-9.:]*" "$B/srv.log" | head -1)
git init -q "$B/r"; cd "$B/r"; git remote add origin "$B/origin.git"
git model track '*.bin' >/dev/null
git config -f .gitmodel model.url "$URL/bench/big"
git add .gitmodel .gitattributes; git commit -qm init
head -c "${GIB}G" /dev/urandom > big.bin
sha=$(sha256sum big.bin | cut -d' ' -f1)
/usr/bin/time -f "add $GIB GiB: %e s wall, peak RSS %M KB" git add big.bin
git commit -qm big
/usr/bin/time -f "push $GIB GiB: %e s wall, peak RSS %M KB" git push -q origin main
echo "server after push: $(grep VmHWM /proc/$SP/status)"
cd "$B"; rm -rf "$B/r"
GIT_MODEL_SKIP_SMUDGE=1 git clone -q "$B/origin.git" c; cd c
/usr/bin/time -f "pull $GIB GiB: %e s wall, peak RSS %M KB" git model pull
[ "$(sha256sum big.bin | cut -d' ' -f1)" = "$sha" ] || { echo "pulled file differs" >&2; exit 1; }
echo "verified byte-exact; server after pull: $(grep VmHWM /proc/$SP/status)"
