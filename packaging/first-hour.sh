#!/usr/bin/env bash
# An admin's first hour with the installed package, as README's "In short" block tells it,
# then the service run exactly as its unit would run it. Called by packaging/check-deb.sh
# (as root, with the .deb installed); not for a machine where clairo-sync is in use.
#
# - the shipped example config plus only the README's edits: the API key file, the
#   webhook's URL and its secret in /etc/clairo-sync/credentials/; and, as a test can only
#   do, clairo.base_url pointed at the sandbox (`clairo-sync sandbox`) and the URL at a
#   local receiver;
# - `clairo-sync check --online` as root, which must say ok;
# - the daemon as systemd would start it, every part read from the installed unit: User=
#   and Group= (setpriv), UMask=, StateDirectory=/StateDirectoryMode=, a credentials
#   directory built from its LoadCredential= lines (a directory's files as ID_<file>),
#   NOTIFY_SOCKET, and ExecStart=. The first brief must reach the receiver;
# - and the other way round: with the webhook's secret gone, check fails and so does the
#   service, with the same line.
set -euo pipefail

unit=${1:?usage: first-hour.sh UNIT_FILE}
bin=/usr/bin/clairo-sync
config=/etc/clairo-sync/clairo-sync.toml
work=$(mktemp -d /tmp/clairo-sync-first-hour.XXXXXX)
chmod 0755 "$work"
pids=()
finish() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap finish EXIT

fail() {
  echo "first hour: $*" >&2
  for log in "$work"/*.log; do
    [ -s "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
  done
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The unit's value(s) for KEY from uncommented lines, in order.
unit_values() {
  sed -n "s/^$1=//p" "$unit"
}
unit_value() {
  unit_values "$1" | tail -n 1
}

# --- Before the first start: no state yet, and asking creates none.
set +e
"$bin" status >"$work/status.out" 2>"$work/status.err"
code=$?
set -e
[ "$code" -eq 1 ] && grep -q "no state yet" "$work/status.err" || fail "status before the first start: exit $code, $(cat "$work/status.err")"
[ -z "$(ls -A /var/lib/clairo-sync)" ] || fail "status created $(ls -A /var/lib/clairo-sync)"

# --- The sandbox (the Clairo API stand-in) and a webhook receiver.
api_port=$(free_port)
"$bin" sandbox --listen "127.0.0.1:$api_port" >"$work/sandbox.log" 2>&1 &
pids+=($!)
hook_port=$(free_port)
cat >"$work/receiver.py" <<'PY'
import http.server, sys
out = sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200); self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "ab") as f:
            f.write(body + b"\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
PY
python3 "$work/receiver.py" "$hook_port" "$work/received.jsonl" >"$work/receiver.log" 2>&1 &
pids+=($!)
up() {
  for _ in $(seq 100); do
    curl -fs -o /dev/null "$@" && return 0
    sleep 0.1
  done
  fail "nothing answers at $*"
}
up "http://127.0.0.1:$api_port/api/v1/agents" -H 'Authorization: Bearer clr_sandbox_key'
up -I "http://127.0.0.1:$hook_port/hook"

# --- README "In short": the key, the webhook's URL, its secret.
install -m 0600 /dev/null /etc/clairo-sync/api-key
echo clr_sandbox_key >/etc/clairo-sync/api-key
sed -i "s|^url = \"https://hooks.example.com/clairo\"|url = \"http://127.0.0.1:$hook_port/hook\"|" "$config"
grep -q "^url = \"http://127.0.0.1:$hook_port/hook\"" "$config" || fail "the example config has no webhook url line to edit"
install -m 0600 /dev/null /etc/clairo-sync/credentials/sales_hook-secret
echo whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw >/etc/clairo-sync/credentials/sales_hook-secret
# Only a test points the daemon at the sandbox.
sed -i "s|^# base_url = \"https://clairo.tech/api/v1\"|base_url = \"http://127.0.0.1:$api_port/api/v1\"|" "$config"
grep -q "^base_url = \"http://127.0.0.1:$api_port/api/v1\"" "$config" || fail "the example config has no base_url line to edit"

"$bin" check --online >"$work/check.log" 2>&1 || fail "sudo clairo-sync check --online failed"
grep -qx ok "$work/check.log" || fail "check did not say ok"
[ ! -s "$work/received.jsonl" ] || fail "check --online (without --send-test) sent an event"

# --- The service, as its unit starts it.
user=$(unit_value User)
group=$(unit_value Group)
umask_value=$(unit_value UMask)
state=$(unit_value StateDirectory)
state_mode=$(unit_value StateDirectoryMode)
exec_start=$(unit_value ExecStart)
# Environment= (KEY=value words; the unit's are plain, no quotes or spaces in values).
environment=$(unit_values Environment | tr '\n' ' ')
[ -n "$user" ] && [ -n "$group" ] && [ -n "$umask_value" ] && [ -n "$state" ] && [ -n "$exec_start" ] ||
  fail "the unit lacks User=, Group=, UMask=, StateDirectory= or ExecStart="

# StateDirectory=: systemd makes it (or fixes it) owned by the user, with its mode.
install -d -o "$user" -g "$group" -m "${state_mode:-0755}" "/var/lib/$state"

# $CREDENTIALS_DIRECTORY as systemd builds it from the LoadCredential= lines: a file as
# its ID, each file of a directory as ID_<file> (symlinks skipped); a missing file keeps
# the service from starting.
credentials_for_unit() {
  local creds=$1 line id path file
  rm -rf "$creds"
  install -d -m 0700 "$creds"
  while IFS= read -r line; do
    id=${line%%:*}
    path=${line#*:}
    if [ -d "$path" ]; then
      while IFS= read -r -d '' file; do
        install -m 0400 "$file" "$creds/${id}_$(basename "$file")"
      done < <(find "$path" -type f -print0)
    elif [ -f "$path" ]; then
      install -m 0400 "$path" "$creds/$id"
    else
      echo "LoadCredential=$line: $path does not exist; the service would not start" >&2
      return 1
    fi
  done < <(unit_values LoadCredential)
  chown -R "$user:$group" "$creds"
  chmod 0500 "$creds"
}

# Runs ExecStart= as the unit would, in the background; its pid in $service_pid.
start_service() {
  local creds=$1 log=$2 command=$exec_start
  command=${command#[-@:+!]}
  rm -f "$work/notify.sock"
  python3 - "$work/notify.sock" "$work/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
import os; os.chmod(sys.argv[1], 0o777)
with open(sys.argv[2], "a") as out:
    while True:
        out.write(s.recv(4096).decode() + "\n"); out.flush()
PY
  pids+=($!)
  for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
  # shellcheck disable=SC2086 # ExecStart= and Environment= are split on white space, as systemd splits them
  (
    umask "$umask_value"
    cd /
    exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="/var/lib/$state" USER="$user" LOGNAME="$user" \
      CREDENTIALS_DIRECTORY="$creds" NOTIFY_SOCKET="$work/notify.sock" $environment \
      setpriv --reuid="$user" --regid="$group" --init-groups $command
  ) >"$log" 2>&1 &
  service_pid=$!
  pids+=("$service_pid")
}

creds=$work/credentials
credentials_for_unit "$creds" || fail "the unit's credentials"
start_service "$creds" "$work/service.log"
for _ in $(seq 600); do
  grep -q '"type":"brief.created"' "$work/received.jsonl" 2>/dev/null && break
  kill -0 "$service_pid" 2>/dev/null || fail "the service exited although check said ok"
  sleep 0.1
done
grep -q '"type":"brief.created"' "$work/received.jsonl" 2>/dev/null || fail "no brief reached the webhook within 60 s"
grep -q READY=1 "$work/notify.log" || fail "the service did not tell systemd it was ready"
echo "first brief delivered: $(head -n 1 "$work/received.jsonl" | cut -c 1-120)…"
curl -fs 127.0.0.1:9464/readyz >/dev/null || fail "/readyz is not 200"
runuser -u "$user" -- "$bin" deliveries list >"$work/deliveries.out" 2>&1 || fail "deliveries list as $user"
grep -q 'sales_hook .*delivered' "$work/deliveries.out" || fail "deliveries list shows no delivered sales_hook row: $(cat "$work/deliveries.out")"
# Nothing in the state directory belongs to anyone but the service, and nothing is
# readable by others (UMask=).
stray=$(find "/var/lib/$state" ! -user "$user" -o -perm /o=rwx)
[ -z "$stray" ] || fail "files the service does not own, or others may read: $stray"
kill -TERM "$service_pid"
for _ in $(seq 300); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$service_pid" 2>/dev/null; then fail "the service did not stop within 30 s of SIGTERM"; fi
wait "$service_pid" || fail "the service exited $? on SIGTERM"

# --- And they disagree in neither direction: without the webhook's secret, check says so
# and the service refuses to start, on the same line.
rm /etc/clairo-sync/credentials/sales_hook-secret
set +e
"$bin" check >"$work/check-nosecret.log" 2>&1
check_code=$?
set -e
[ "$check_code" -eq 78 ] || fail "check without the webhook's secret: exit $check_code"
credentials_for_unit "$creds" || fail "the unit's credentials"
start_service "$creds" "$work/service-nosecret.log"
set +e
wait "$service_pid"
service_code=$?
set -e
[ "$service_code" -eq 78 ] || fail "the service without the webhook's secret: exit $service_code"
grep -q '^connectors.sales_hook.secret: ' "$work/check-nosecret.log" &&
  grep -q '^connectors.sales_hook.secret: ' "$work/service-nosecret.log" ||
  fail "check and the service do not name the same problem"
echo "first hour: ok (check and the service agree, with and without the secret)"
