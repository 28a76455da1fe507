#!/bin/bash
# Builds the plumb packages into $TARGET/packages/: plumb_<ver>-1_<arch>.deb and plumb-<ver>-1.<arch>.rpm.
#
#   packaging/build.sh [--version VER]
#
# Installs cargo-deb and cargo-generate-rpm from crates.io when missing, builds the release
# binary, generates the man pages and shell completions from the CLI definition, then runs both
# packagers. --version VER overrides the package version (the binary keeps its own).
# Honours CARGO_TARGET_DIR (default: target/ in the workspace).
set -euo pipefail
cd "$(dirname "$0")/.."

version=
while [ $# -gt 0 ]; do
    case $1 in
        --version) version=${2:?--version needs a value}; shift 2 ;;
        *) echo "usage: $0 [--version VER]" >&2; exit 2 ;;
    esac
done

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
missing=()
cargo deb --version >/dev/null 2>&1 || missing+=(cargo-deb)
cargo generate-rpm --version >/dev/null 2>&1 || missing+=(cargo-generate-rpm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: installing ${missing[*]}" >&2
    cargo install --locked "${missing[@]}"
fi

target=${CARGO_TARGET_DIR:-$PWD/target}
out=$target/packages
cargo build --release -p plumb --locked

# Man pages and completions, from the very binary being packaged.
docs=$target/release/plumb-docs
rm -rf "$docs"
"$target/release/plumb" generate-docs "$docs"
gzip -9n "$docs"/man/*.1

mkdir -p "$out"
deb_args=()
rpm_args=()
if [ -n "$version" ]; then
    deb_args+=(--deb-version "$version-1")
    rpm_args+=(--set-metadata "version = \"$version\"")
fi
cargo deb -p plumb --no-build --no-strip -o "$out" "${deb_args[@]}"
cargo generate-rpm -p agent --target-dir "$target" -o "$out" "${rpm_args[@]}"
ls -l "$out"
