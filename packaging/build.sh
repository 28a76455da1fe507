#!/bin/bash
# Builds the plumb packages into $TARGET/packages/: plumb_<ver>-1_<arch>.deb and plumb-<ver>-1.<arch>.rpm.
#
#   packaging/build.sh [--version VER] [--out DIR]
#
# Installs cargo-deb and cargo-generate-rpm (the pinned versions below; this needs network) when
# missing or at another version, builds the release binary, generates the man pages and shell
# completions from the CLI definition, then runs both packagers. --version VER overrides the
# package version (the binary keeps its own); --out DIR writes the packages there instead (the
# tests keep theirs out of target/packages).
# Honours CARGO_TARGET_DIR (default: target/ in the workspace).
set -euo pipefail
cd "$(dirname "$0")/.."

version=
out=
while [ $# -gt 0 ]; do
    case $1 in
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        *) echo "usage: $0 [--version VER] [--out DIR]" >&2; exit 2 ;;
    esac
done

# The packagers, pinned: the same sources make the same packages next year. Another installed
# version is replaced by the pinned one (a different packager can lay the package out otherwise).
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
ensure_tool() { # crate, version, the version its --version prints
    local crate=$1 want=$2 have
    have=$(cargo "${crate#cargo-}" --version 2>/dev/null || true)
    if [[ "$have" != *" $want"* ]]; then
        echo "build.sh: installing $crate $want${have:+ (found: $have)}" >&2
        cargo install --locked --force --version "=$want" "$crate"
    fi
}
ensure_tool cargo-deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

target=${CARGO_TARGET_DIR:-$PWD/target}
out=${out:-$target/packages}
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
