#!/usr/bin/env bash
# Installs what the test suite needs besides Rust, when it is missing: a real SMTP server
# for the email tests (aiosmtpd, from PyPI), the Standard Webhooks reference verifier for
# the webhook signing tests (standardwebhooks, from PyPI), ffmpeg for the transcoding
# tests, promtool for the metrics and alert-rule tests, systemd-analyze and man for the
# unit's tests, and PostgreSQL's server programs for the store's tests against PostgreSQL
# (each test starts its own throwaway cluster: clairo-pgtest, pgtest/).
#
# `cargo nextest run --workspace` runs it first (.config/nextest.toml, a setup script), so
# a fresh clone needs no other step. It changes nothing when everything is there. As
# root it installs with apt-get and pip; otherwise it prints what to install and leaves
# it to the tests, which fail naming what they lack (none skips silently).
set -euo pipefail

missing_debs=()
command -v systemd-analyze >/dev/null || missing_debs+=(systemd)
command -v promtool >/dev/null || missing_debs+=(prometheus)
command -v man >/dev/null || missing_debs+=(man-db)
command -v ffmpeg >/dev/null || missing_debs+=(ffmpeg)
command -v openssl >/dev/null || missing_debs+=(openssl)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing_debs+=(postgresql)
has_aiosmtpd() { python3 -c 'import aiosmtpd' >/dev/null 2>&1; }
has_standardwebhooks() { python3 -c 'import standardwebhooks' >/dev/null 2>&1; }
missing_pips=()
has_aiosmtpd || missing_pips+=('aiosmtpd==1.4.6')
has_standardwebhooks || missing_pips+=('standardwebhooks==1.1.0')

if [ ${#missing_debs[@]} -eq 0 ] && [ ${#missing_pips[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "test-prereqs: missing ${missing_debs[*]:-} ${missing_pips[*]:-};" \
    "run scripts/test-prereqs.sh as root (or: apt-get install ${missing_debs[*]:-};" \
    "python3 -m pip install ${missing_pips[*]:-}). The tests that need them will fail." >&2
  exit 0
fi

# Several test runs may start at once (two worktrees): one installs, the others wait.
exec 9>/tmp/clairo-sync-test-prereqs.lock
flock 9

if [ ${#missing_debs[@]} -gt 0 ]; then
  echo "test-prereqs: installing ${missing_debs[*]} (apt-get)" >&2
  # Only the tools are wanted: policy-rc.d keeps apt from starting the Prometheus server
  # that comes with promtool, and the PostgreSQL cluster the package makes (the tests
  # run their own, unprivileged, on free ports).
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && created_policy=1
  fi
  status=0
  { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null; } || status=$?
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$status" -eq 0 ] || { echo "test-prereqs: apt-get failed ($status)" >&2; exit "$status"; }
fi

# Another run may have installed them while this one waited for the lock.
missing_pips=()
has_aiosmtpd || missing_pips+=('aiosmtpd==1.4.6')
has_standardwebhooks || missing_pips+=('standardwebhooks==1.1.0')
if [ ${#missing_pips[@]} -gt 0 ]; then
  echo "test-prereqs: installing ${missing_pips[*]} (pip)" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${missing_pips[@]}")
  # Debian's own Python refuses a system-wide pip install (PEP 668) unless told.
  "${pip[@]}" 2>/dev/null || "${pip[@]}" --break-system-packages
fi
