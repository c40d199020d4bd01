#!/usr/bin/env bash
# Check a built gateway image (deploy/Containerfile) as a cluster would run it: a read-only
# root filesystem, a data volume, an arbitrary port; refused without an admin key; alive,
# ready and key-enforcing once it has one; its HEALTHCHECK healthy; no compiler, no llama.cpp.
#
#   scripts/check-image.sh [IMAGE]          (default localhost/ganglion:dev)
#
# PODMAN names the client (default podman; docker works too); RUN_FLAGS adds flags to every
# `run` (a machine whose limits or cgroups need them). Uses the host's network, port PORT.
set -euo pipefail

image=${1:-localhost/ganglion:dev}
podman=${PODMAN:-podman}
port=${PORT:-18435}
volume=ganglion-check-$$
name=ganglion-check-$$
read -r -a flags <<<"${RUN_FLAGS:-}"
run() { $podman run --rm "${flags[@]}" --read-only --tmpfs /tmp -v "$volume:/var/lib/ganglion" "$@"; }
cleanup() { $podman rm -f "$name" >/dev/null 2>&1 || true; $podman volume rm -f "$volume" >/dev/null 2>&1 || true; }
trap cleanup EXIT
ok() { echo "check-image: ok: $*"; }
fail() { echo "check-image: FAILED: $*" >&2; exit 1; }

user=$($podman image inspect --format '{{.Config.User}}' "$image")
[[ $user =~ ^[1-9][0-9]*:[0-9]+$ ]] || fail "USER is '$user', not a numeric non-root uid:gid"
ok "runs as $user"
entry=$($podman image inspect --format '{{json .Config.Entrypoint}}' "$image")
[ "$entry" = '["ganglion","serve"]' ] || fail "entry point is $entry"
ok "entry point $entry"
health=$($podman image inspect --format '{{json .Config.Healthcheck}}' "$image")
[[ $health == *healthz* ]] || fail "no HEALTHCHECK on /healthz (build with --format docker)"
ok "HEALTHCHECK asks /healthz"

if run "$image" >/tmp/check-image-$$.log 2>&1; then fail "started without an admin key"; fi
grep -q "refusing to bind 0.0.0.0" /tmp/check-image-$$.log || fail "$(cat /tmp/check-image-$$.log)"
ok "refuses to start without an admin key: $(tail -1 /tmp/check-image-$$.log | cut -c1-90)..."
key=$(run --entrypoint ganglion "$image" keys create --admin --name check 2>/dev/null)
ok "keys create --admin in the volume (prefix ${key:3:8})"

$podman run -d "${flags[@]}" --name "$name" --network host --read-only --tmpfs /tmp \
  -v "$volume:/var/lib/ganglion" -e GANGLION_PORT="$port" "$image" >/dev/null
get() { python3 -c "import sys, urllib.request as u, urllib.error as e
r = u.Request(sys.argv[1], headers=dict(h.split(': ', 1) for h in sys.argv[2:]))
try: print(u.urlopen(r, timeout=5).status)
except e.HTTPError as x: print(x.code)
except OSError: print(0)" "http://127.0.0.1:$port$1" "${@:2}"; }
for _ in $(seq 150); do [ "$(get /readyz)" = 200 ] && break; sleep 0.2; done
[ "$(get /healthz)" = 200 ] || fail "/healthz: $(get /healthz); $($podman logs "$name" 2>&1 | tail -5)"
[ "$(get /readyz)" = 200 ] || fail "/readyz: $(get /readyz)"
ok "/healthz 200, /readyz 200 without a key, on a read-only root"
[ "$(get /fleet/neurons)" = 401 ] || fail "/fleet/neurons without a key: $(get /fleet/neurons)"
[ "$(get /fleet/neurons "Authorization: Bearer $key")" = 200 ] || fail "the admin key is refused"
ok "/fleet/neurons 401 without a key, 200 with it"
$podman healthcheck run "$name" >/dev/null || fail "podman healthcheck run: unhealthy"
ok "podman healthcheck run: healthy"
who=$($podman exec "$name" id -u)
[ "$who" != 0 ] || fail "the gateway runs as root"
ok "the gateway process runs as uid $who"
if $podman exec "$name" sh -c 'command -v gcc || command -v cc || command -v llama-server ||
  python3 -c "import llama_cpp"' >/dev/null 2>&1; then fail "a compiler or llama.cpp is in the image"; fi
ok "no gcc, cc, llama-server or llama_cpp in the image"
size=$($podman image inspect --format '{{.Size}}' "$image")
ok "image size $((size / 1000000)) MB"
echo "check-image: all checks passed for $image"
