#!/usr/bin/env python3
"""verify_tree.py MANIFEST VERSION DIR: exit 0 iff DIR holds exactly the files that
manifest.json lists for VERSION, each with the listed size and sha256."""
import hashlib
import json
import os
import sys


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def main():
    manifest, version, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    want = {f["path"]: f for f in json.load(open(manifest))["versions"][version - 1]["files"]}
    have = set()
    for dp, _, fns in os.walk(root):
        for fn in fns:
            have.add(os.path.relpath(os.path.join(dp, fn), root))
    bad = [f"missing {p}" for p in sorted(set(want) - have)]
    bad += [f"unexpected {p}" for p in sorted(have - set(want))]
    for p in sorted(set(want) & have):
        full = os.path.join(root, p)
        if os.path.getsize(full) != want[p]["size"]:
            bad.append(f"{p}: {os.path.getsize(full)} bytes, want {want[p]['size']}")
        elif sha256(full) != want[p]["sha256"]:
            bad.append(f"{p}: sha256 differs")
    for b in bad[:20]:
        print(f"verify_tree: v{version}: {b}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
