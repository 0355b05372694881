#!/usr/bin/env bash
# Builds the .deb (packaging/build-deb.sh), checks what it holds, installs it, checks the
# installed unit and binary, runs an admin's first hour with it (packaging/first-hour.sh:
# README's steps, then the daemon exactly as its unit starts it, up to a delivered lead),
# and purges it again. Run as root on a throwaway machine (CI). Needs cargo-deb, dpkg,
# systemd-analyze, python3, curl and setpriv.
set -euo pipefail
cd "$(dirname "$0")/.."

build_log=$(mktemp)
packaging/build-deb.sh 2>&1 | tee "$build_log"
if grep -i 'warning' "$build_log" | grep -qv '^warning: unused'; then
  echo "building the package warned (see above); fix the asset list or the metadata" >&2
  exit 1
fi
rm -f "$build_log"
deb=$(ls -t target/debian/clairo-sync_*.deb | head -n 1)
echo "package: $deb"

contents=$(dpkg-deb --contents "$deb")
for path in \
  ./usr/bin/clairo-sync \
  ./etc/clairo-sync/clairo-sync.toml \
  ./usr/lib/sysusers.d/clairo-sync.conf \
  ./usr/lib/tmpfiles.d/clairo-sync.conf \
  ./usr/share/clairo-sync/clairo-sync.rules.yml \
  ./usr/share/clairo-sync/clairo-sync.rules.test.yml \
  ./usr/share/clairo-sync/grafana-dashboard.json \
  ./usr/share/man/man1/clairo-sync.1.gz \
  ./usr/share/bash-completion/completions/clairo-sync; do
  if ! grep -q " $path\$" <<<"$contents"; then
    echo "the package lacks $path" >&2
    exit 1
  fi
done
# Where docs/operations.md and the units' own comments say they are: the main unit and
# the per-account template (docs/operations.md, "Several accounts on one host").
unit=/usr/lib/systemd/system/clairo-sync.service
template=/usr/lib/systemd/system/clairo-sync@.service
for path in "$unit" "$template"; do
  if ! grep -q " \.$path\$" <<<"$contents"; then
    echo "the package lacks $path" >&2
    exit 1
  fi
done
dpkg-deb --info "$deb" conffiles | grep -qx /etc/clairo-sync/clairo-sync.toml || {
  echo "the example config is not a conffile" >&2
  exit 1
}
# The binary's packed relocations (DT_RELR) need glibc 2.36; the package must say so.
depends=$(dpkg-deb --field "$deb" Depends)
grep -q 'libc6 (>= 2.36)' <<<"$depends" && [ "$(grep -o 'libc6 ' <<<"$depends" | wc -l)" -eq 1 ] || {
  echo "the package must depend on libc6 (>= 2.36), once: $depends" >&2
  exit 1
}
# The postinst runs both under `set -e`.
for tool in systemd-sysusers systemd-tmpfiles; do
  grep -q "$tool" <<<"$depends" || { echo "the package does not depend on $tool: $depends" >&2; exit 1; }
done
# Depends names no other library (no $auto): the binary must need nothing else.
extract=$(mktemp -d)
dpkg-deb -x "$deb" "$extract"
needed=$(readelf -d "$extract/usr/bin/clairo-sync" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
rm -rf "$extract"
for library in $needed; do
  case "$library" in
    libc.so.6 | libm.so.6 | ld-linux-*.so.2 | libgcc_s.so.1) ;;
    *) echo "the binary needs $library, which Depends does not name; add its package" >&2; exit 1 ;;
  esac
done

if dpkg -s clairo-sync >/dev/null 2>&1; then
  echo "clairo-sync is already installed here; not touching it" >&2
  exit 1
fi
for left in /etc/clairo-sync /var/lib/clairo-sync; do
  if [ -e "$left" ]; then
    echo "$left is left from an earlier install (purge keeps it); remove it first" >&2
    exit 1
  fi
done
cleanup() {
  rm -f /tmp/clairo-sync-check.err
  dpkg --purge clairo-sync >/dev/null 2>&1 || true
  # What purge keeps on purpose (docs/operations.md §10): this test's own, so removed.
  rm -rf /etc/clairo-sync /var/lib/clairo-sync
  if getent passwd clairo-sync >/dev/null; then userdel clairo-sync 2>/dev/null || true; fi
  if getent group clairo-sync >/dev/null; then groupdel clairo-sync 2>/dev/null || true; fi
}
trap cleanup EXIT
dpkg -i "$deb"
getent passwd clairo-sync >/dev/null || { echo "the clairo-sync user was not created" >&2; exit 1; }
# Made at install (tmpfiles.d), before any start: owner, group and mode.
for expected in "/var/lib/clairo-sync clairo-sync:clairo-sync 750" \
  "/etc/clairo-sync/credentials root:root 700" \
  "/etc/clairo-sync/clairo-sync.toml root:clairo-sync 640"; do
  path=${expected%% *}
  actual="$path $(stat -c '%U:%G %a' "$path" 2>/dev/null || echo missing)"
  [ "$actual" = "$expected" ] || { echo "installed: $actual, expected: $expected" >&2; exit 1; }
done
/usr/bin/clairo-sync --version
systemd-analyze verify "$unit"
exposure=$(systemd-analyze security --offline=true --no-pager "$unit" | sed -n 's/.*Overall exposure level for clairo-sync.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security exposure: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }' || { echo "exposure $exposure > 1.5" >&2; exit 1; }
# The template, as an instance (systemd-analyze reads clairo-sync@acme from clairo-sync@.service).
systemd-analyze verify /usr/lib/systemd/system/clairo-sync@acme.service
exposure=$(systemd-analyze security --offline=true --no-pager /usr/lib/systemd/system/clairo-sync@acme.service |
  sed -n 's/.*Overall exposure level for clairo-sync@acme.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security exposure of clairo-sync@acme: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }' || { echo "template exposure $exposure > 1.5" >&2; exit 1; }
# Without a key the shipped config is refused with EX_CONFIG and advice, not a crash.
set +e
/usr/bin/clairo-sync check -c /etc/clairo-sync/clairo-sync.toml 2>/tmp/clairo-sync-check.err
code=$?
set -e
if [ "$code" -ne 78 ] || ! grep -q "clairo.api_key: no API key found" /tmp/clairo-sync-check.err; then
  echo "check without a key: exit $code" >&2
  cat /tmp/clairo-sync-check.err >&2
  exit 1
fi
# README's steps, then the service as its unit runs it, up to the first delivered lead.
packaging/first-hour.sh "$unit"
# Purge keeps the secrets and the state, on purpose (docs/operations.md §10).
dpkg --purge clairo-sync >/dev/null
[ -f /etc/clairo-sync/api-key ] && [ -d /var/lib/clairo-sync ] && [ ! -e /etc/clairo-sync/clairo-sync.toml ] || {
  echo "purge did not keep the secrets and the state, or kept the config" >&2
  exit 1
}
echo "package check: ok"
