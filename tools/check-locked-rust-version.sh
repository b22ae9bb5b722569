#!/bin/sh
# Cargo.toml's rust-version is a promise about the dependencies too: every
# package Cargo.lock pins (build, run or test) must declare a rust-version
# no newer than ours, or a Rust of that version cannot build the crate with
# this lock. scripts/check-rust-1.63.sh proves the crate's own code; this,
# the lock. After `cargo update`, re-resolve with
#   cargo update --config 'resolver.incompatible-rust-versions="fallback"'
# usage: check-locked-rust-version.sh [CARGO]
set -eu
cargo=${1:-cargo}
cd "$(dirname "$0")/.."
"$cargo" metadata --format-version 1 --locked | python3 -c '
import json, sys

def version(text):  # "1.63" and "1.63.0" alike
    return tuple(int(part) for part in (text.split(".") + ["0", "0"])[:3])

metadata = json.load(sys.stdin)
ours = next(p for p in metadata["packages"] if p["id"] in metadata["workspace_members"])
limit = version(ours["rust_version"])
newer = [
    "%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
    for p in metadata["packages"]
    if p.get("rust_version") and version(p["rust_version"]) > limit
]
for line in newer:
    print("check-locked-rust-version: %s, newer than rust-version %s" % (line, ours["rust_version"]), file=sys.stderr)
if newer:
    sys.exit(1)
print("check-locked-rust-version: the %d packages of Cargo.lock all build with Rust %s"
      % (len(metadata["packages"]), ours["rust_version"]))
'
