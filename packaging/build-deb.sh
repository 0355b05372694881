#!/usr/bin/env bash
# Builds the Debian package: target/debian/clairo-sync_<version>-1_<arch>.deb.
#
# The release binary first, then what it generates about itself (shell completions and man
# pages, into target/assets/, which [package.metadata.deb] in Cargo.toml names), then
# cargo-deb packages it all without building again. Needs cargo-deb:
#   cargo install cargo-deb --locked
# Extra arguments go to cargo-deb (e.g. --deb-revision 2, --output DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
fi

# CLAIRO_SYNC_FEATURES=postgres builds a package that can keep its state in PostgreSQL.
cargo build --release --locked --bin clairo-sync ${CLAIRO_SYNC_FEATURES:+--features "$CLAIRO_SYNC_FEATURES"}

# The binary lives in Cargo's target dir (which CARGO_TARGET_DIR or a config may move);
# the assets go to ./target/assets, where Cargo.toml's asset list looks for them.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/clairo-sync"
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"

"$bin" completions bash >"$assets/completions/clairo-sync.bash"
"$bin" completions zsh >"$assets/completions/_clairo-sync"
"$bin" completions fish >"$assets/completions/clairo-sync.fish"
# clairo-sync.1 and one page per subcommand; cargo-deb gzips them.
"$bin" manpage --dir "$assets/man"

cargo deb --no-build "$@"
