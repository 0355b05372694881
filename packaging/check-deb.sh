#!/usr/bin/env bash
# Builds the .deb (packaging/build-deb.sh), checks what it holds, installs it, checks the
# installed unit and binary, and purges it again — what an admin's first steps would hit.
# Run as root on a throwaway machine (CI). Needs cargo-deb, dpkg and systemd-analyze.
set -euo pipefail
cd "$(dirname "$0")/.."

packaging/build-deb.sh
deb=$(ls -t target/debian/clairo-sync_*.deb | head -n 1)
echo "package: $deb"

contents=$(dpkg-deb --contents "$deb")
for path in \
  ./usr/bin/clairo-sync \
  ./etc/clairo-sync/clairo-sync.toml \
  ./usr/lib/sysusers.d/clairo-sync.conf \
  ./usr/share/clairo-sync/clairo-sync.rules.yml \
  ./usr/share/man/man1/clairo-sync.1.gz \
  ./usr/share/bash-completion/completions/clairo-sync; do
  if ! grep -q " $path\$" <<<"$contents"; then
    echo "the package lacks $path" >&2
    exit 1
  fi
done
# cargo-deb puts units in /lib or /usr/lib/systemd/system, depending on its version.
unit=$(grep -oE '\./(usr/)?lib/systemd/system/clairo-sync\.service$' <<<"$contents" | head -n 1 | sed 's/^\.//')
if [ -z "$unit" ]; then
  echo "the package lacks the systemd unit" >&2
  exit 1
fi
dpkg-deb --info "$deb" conffiles | grep -qx /etc/clairo-sync/clairo-sync.toml || {
  echo "the example config is not a conffile" >&2
  exit 1
}
# The binary's packed relocations (DT_RELR) need glibc 2.36; the package must say so.
dpkg-deb --field "$deb" Depends | grep -q 'libc6 (>= 2.36)' || {
  echo "the package does not depend on libc6 (>= 2.36): $(dpkg-deb --field "$deb" Depends)" >&2
  exit 1
}

if dpkg -s clairo-sync >/dev/null 2>&1; then
  echo "clairo-sync is already installed here; not touching it" >&2
  exit 1
fi
cleanup() {
  rm -f /etc/clairo-sync/api-key /etc/clairo-sync/sales_hook-secret /tmp/clairo-sync-check.err
  dpkg --purge clairo-sync >/dev/null 2>&1 || true
  if getent passwd clairo-sync >/dev/null; then userdel clairo-sync 2>/dev/null || true; fi
  rmdir /etc/clairo-sync 2>/dev/null || true
}
trap cleanup EXIT
dpkg -i "$deb"
getent passwd clairo-sync >/dev/null || { echo "the clairo-sync user was not created" >&2; exit 1; }
/usr/bin/clairo-sync --version
systemd-analyze verify "$unit"
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
# With the key where the unit's LoadCredential= takes it from, the same check passes.
install -m 0600 /dev/null /etc/clairo-sync/api-key
echo clr_package_check >/etc/clairo-sync/api-key
install -m 0600 /dev/null /etc/clairo-sync/sales_hook-secret
echo whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw >/etc/clairo-sync/sales_hook-secret
/usr/bin/clairo-sync check -c /etc/clairo-sync/clairo-sync.toml
rm -f /etc/clairo-sync/api-key /etc/clairo-sync/sales_hook-secret
echo "package check: ok"
