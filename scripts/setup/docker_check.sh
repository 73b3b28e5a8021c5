#!/usr/bin/env bash
# The Docker image, end to end, in one command (`make docker-check`):
#
#   1. installs Docker from Debian packages (docker.io; debootstrap when a local base is needed)
#      where it is missing;
#   2. starts dockerd when no daemon answers (systemd where it runs, else in the background,
#      logging to $DOCKERD_LOG) and waits for it;
#   3. takes the Dockerfile's public base image if it is present or can be pulled, else makes a
#      local one once — a Debian 12 (bookworm) root file system with python3 (3.11), pip and
#      ca-certificates, made with debootstrap and `docker import`ed as $LOCAL_BASE — and takes
#      uv from its image on ghcr.io, else from PyPI (UV_FROM=pypi);
#   4. builds the image $IMAGE (timed; the log goes to $CHECK_DIR/build-cpu.log);
#   5. runs `safebench reproduce quickstart --smoke` in it, with $CHECK_DIR mounted at
#      /app/results, as the owner of this checkout (--user UID:GID, so the files on the host
#      belong to that user, not to root), with --shm-size=2g for Ray;
#   6. checks that the report landed on the host: $CHECK_DIR/quickstart-smoke/report/.
#
# With --cuda it also builds the CUDA variant ($CUDA_IMAGE, --build-arg DEVICE=cuda; on the local
# base when NVIDIA's image cannot be pulled) and checks torch in it (on the GPU with --gpus all
# where `nvidia-smi` works, else on the CPU). Re-running reuses the base image and the build
# cache; the smoke results in $CHECK_DIR are made afresh each time (never ./results/quickstart*,
# so a user's own results are not touched). Run it as root where Docker must be installed or
# started; a user of the `docker` group can run it once the daemon is up.
#
#   sudo make docker-check                       # or: sudo bash scripts/setup/docker_check.sh
#   sudo bash scripts/setup/docker_check.sh --cuda     # and the CUDA variant
#
# Settings (environment variables):
#   IMAGE, CUDA_IMAGE      tags built (default safebench, safebench:cuda)
#   LOCAL_BASE             the local base's tag (default safebench-base:bookworm)
#   USE_LOCAL_BASE         auto (default: when the public base cannot be pulled), yes, no
#   DEBIAN_MIRROR          debootstrap's mirror (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security)
#   CA_BUNDLE              extra CA bundle given to the build as a secret (default: $SSL_CERT_FILE
#                          if set, else /etc/ssl/certs/ca-certificates.crt if present; empty: none)
#   PIP_INDEX_URL, HTTP_PROXY, HTTPS_PROXY, NO_PROXY   passed on as build arguments when set
#   CHECK_DIR              host folder mounted at /app/results (default results/docker-check)
#   EXPERIMENT             what `reproduce --smoke` runs (default quickstart)
#   DOCKERD_LOG            dockerd's log when this script starts it (default /var/log/dockerd.log)
#   PULL_TIMEOUT           seconds allowed to pull a public image (default 60)
#   DOCKER                 the docker client to use (default: the first on PATH that builds with
#                          BuildKit: with the buildx plugin, or a Docker 20.10 client)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$(pwd)"

IMAGE="${IMAGE:-safebench}"
CUDA_IMAGE="${CUDA_IMAGE:-safebench:cuda}"
LOCAL_BASE="${LOCAL_BASE:-safebench-base:bookworm}"
USE_LOCAL_BASE="${USE_LOCAL_BASE:-auto}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
if [ -z "${CA_BUNDLE+set}" ]; then
  CA_BUNDLE="${SSL_CERT_FILE:-}"
  if [ -z "$CA_BUNDLE" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
  fi
fi
CHECK_DIR="${CHECK_DIR:-results/docker-check}"
EXPERIMENT="${EXPERIMENT:-quickstart}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
PULL_TIMEOUT="${PULL_TIMEOUT:-60}"

CUDA=0
for arg in "$@"; do
  case "$arg" in
    --cuda) CUDA=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "docker-check: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1mdocker-check:\033[0m %s\n' "$*"; }
die() { printf '\033[1;31mdocker-check: FAILED:\033[0m %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
need_root() { is_root || die "$1 needs root: run it as root (sudo make docker-check)"; }

# The Dockerfile's default for build argument $1 (one source of truth for the pinned images).
dockerfile_arg() {
  local value
  value="$(sed -n "s/^ARG $1=\(.*\)$/\1/p" Dockerfile | head -n 1)"
  [ -n "$value" ] || die "the Dockerfile has no 'ARG $1=...' line"
  printf '%s\n' "$value"
}

apt_install() {
  need_root "installing $*"
  command -v apt-get >/dev/null 2>&1 \
    || die "$* missing and no apt-get here: install them with this system's packages"
  say "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  # wait for another apt/dpkg to finish rather than fail on its lock
  local lock=(-o DPkg::Lock::Timeout=600)
  apt-get "${lock[@]}" update -qq || die "apt-get update failed"
  apt-get "${lock[@]}" install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# ---- 1. a docker client that builds with BuildKit (build secrets need it), and dockerd ------
client_major() { "$1" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p'; }

pick_docker() {
  local c major
  for c in ${DOCKER:-} docker /usr/bin/docker; do
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" buildx version >/dev/null 2>&1; then
      D="$c"
      return 0
    fi
    # before Docker 23 the client has BuildKit built in (DOCKER_BUILDKIT=1); later ones need buildx
    major="$(client_major "$c")"
    if [ -n "$major" ] && [ "$major" -lt 23 ]; then
      D="$c"
      return 0
    fi
  done
  return 1
}

daemon_answers() { command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1; }

# Docker from Debian unless a daemon already answers (a remote DOCKER_HOST, a rootless one, ...)
if ! command -v dockerd >/dev/null 2>&1 && ! daemon_answers "${DOCKER:-docker}"; then
  apt_install docker.io
fi
if ! pick_docker; then
  if apt-cache show docker-buildx >/dev/null 2>&1; then
    apt_install docker-buildx
  fi
  pick_docker || die "no docker client that builds with BuildKit (Docker 20.10, or newer with the \
buildx plugin): install docker-buildx, or point DOCKER at such a client"
fi
export DOCKER_BUILDKIT=1
say "docker client: $(command -v "$D") ($("$D" --version))"

if ! daemon_answers "$D"; then
  say "no docker daemon answers ('$D info' fails)"
  need_root "starting dockerd"
  if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but does not answer yet: waiting for it"
  elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    say "starting dockerd (systemctl start docker)"
    systemctl start docker || die "systemctl start docker failed: see journalctl -u docker"
    DOCKERD_LOG="journalctl -u docker"
  else
    say "starting dockerd in the background (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # setsid + nohup: the daemon outlives this script (and a Ctrl-C of it), as a service would
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    "$D" info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! "$D" info >/dev/null 2>&1; then
    [ -f "$DOCKERD_LOG" ] && tail -n 20 "$DOCKERD_LOG" >&2
    die "dockerd did not answer within 60 s (log: $DOCKERD_LOG)"
  fi
fi
say "docker daemon: $("$D" version --format '{{.Server.Version}}' 2>/dev/null)"

# ---- 2. base images and uv: the public ones if at hand, else local substitutes -------------
have_image() { "$D" image inspect "$1" >/dev/null 2>&1; }
can_pull() {
  have_image "$1" && return 0
  say "pulling $1 (up to ${PULL_TIMEOUT} s)"
  timeout "$PULL_TIMEOUT" "$D" pull -q "$1" >/dev/null 2>&1
}

# A Debian 12 root file system -> $LOCAL_BASE: what python:3.11-slim-bookworm gives, from
# Debian's packages (python3 is 3.11 there, at /usr/bin/python3).
make_local_base() {
  need_root "making the local base image (debootstrap)"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  local dir start
  dir="$(mktemp -d /var/tmp/safebench-base.XXXXXX)"
  start=$SECONDS
  say "making $LOCAL_BASE: debootstrap bookworm from $DEBIAN_MIRROR into $dir"
  if ! debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    bookworm "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1; then
    tail -n 20 "$dir.log" >&2
    die "debootstrap failed (log: $dir.log)"
  fi
  cat >"$dir/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $DEBIAN_SECURITY_MIRROR bookworm-security main
EOF
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  # debootstrap unmounts what it mounted; never delete through a mount that is still there
  if grep -q " $dir/" /proc/mounts; then
    die "something is still mounted under $dir: unmount it, then remove $dir"
  fi
  tar -C "$dir" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
    | "$D" import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      --message "Debian 12 bookworm (debootstrap minbase) + python3, python3-pip, ca-certificates" \
      - "$LOCAL_BASE" >/dev/null
  rm -rf "$dir" "$dir.log"
  say "made $LOCAL_BASE in $((SECONDS - start)) s"
}

local_base() {
  if have_image "$LOCAL_BASE"; then
    say "reusing the local base $LOCAL_BASE" >&2
  else
    make_local_base >&2
  fi
  printf '%s\n' "$LOCAL_BASE"
}

# The base for DEVICE $1 (cpu or cuda): the Dockerfile's public image, or the local base.
base_for() {
  local public
  if [ "$1" = cpu ]; then
    public="$(dockerfile_arg BASE_CPU)"
  else
    public="$(dockerfile_arg BASE_CUDA)"
  fi
  case "$USE_LOCAL_BASE" in
    yes) local_base ;;
    no) can_pull "$public" >&2 || die "cannot pull $public (USE_LOCAL_BASE=no)"; echo "$public" ;;
    auto)
      if can_pull "$public" >&2; then
        echo "$public"
      else
        say "cannot pull $public (no image registry reachable?): using a local base" >&2
        local_base
      fi
      ;;
    *) die "USE_LOCAL_BASE must be auto, yes or no (got $USE_LOCAL_BASE)" ;;
  esac
}

UV_IMAGE="$(dockerfile_arg UV_IMAGE)"
if can_pull "$UV_IMAGE"; then
  UV_FROM=image
else
  UV_FROM=pypi
  say "cannot pull $UV_IMAGE: uv==$(dockerfile_arg UV_VERSION) comes from PyPI (UV_FROM=pypi)"
fi

mkdir -p "$CHECK_DIR"
CHECK_DIR="$(cd "$CHECK_DIR" && pwd)"
SUMMARY="$CHECK_DIR/summary.txt"
: >"$SUMMARY"
note() { say "$*"; printf '%s\n' "$*" >>"$SUMMARY"; }

# ---- 3. build ------------------------------------------------------------------------------
image_size() { "$D" image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1 / 1e9}'; }

build() {  # build TAG DEVICE BASE
  local tag="$1" device="$2" base="$3" log="$CHECK_DIR/build-$2.log" start
  local -a args=(--progress=plain --build-arg "DEVICE=$device" --build-arg "UV_FROM=$UV_FROM")
  if [ "$device" = cpu ]; then
    args+=(--build-arg "BASE_CPU=$base")
  else
    args+=(--build-arg "BASE_CUDA=$base")
  fi
  local var
  for var in PIP_INDEX_URL HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    if [ -n "${!var:-}" ]; then args+=(--build-arg "$var=${!var}"); fi
  done
  if [ -n "$CA_BUNDLE" ]; then
    [ -s "$CA_BUNDLE" ] || die "CA_BUNDLE=$CA_BUNDLE is not a readable file"
    args+=(--secret "id=ca,src=$CA_BUNDLE")
  fi
  say "building $tag (DEVICE=$device, base $base, uv from $UV_FROM${CA_BUNDLE:+, CA secret \
$CA_BUNDLE}); log: $log"
  start=$SECONDS
  # the whole log to the file, the step lines to the terminal
  if ! "$D" build "${args[@]}" -t "$tag" . 2>&1 | tee "$log" \
    | { grep --line-buffered -E '^#[0-9]+ \[[^]]+\] |^#[0-9]+ (DONE|CACHED|ERROR)' || true; }; then
    tail -n 30 "$log" >&2
    die "docker build of $tag failed (log: $log)"
  fi
  note "built $tag (DEVICE=$device, base $base) in $((SECONDS - start)) s;" \
    "image size $(image_size "$tag")"
}

base="$(base_for cpu)"
build "$IMAGE" cpu "$base"

# ---- 4. run the smoke reproduction in it, results on the host ------------------------------
# as the owner of the checkout: the results belong to them, not to root
OWNER="$(stat -c '%u:%g' "$ROOT")"
SMOKE_DIR="$CHECK_DIR/$EXPERIMENT-smoke"
rm -rf "$SMOKE_DIR"
if is_root; then chown "$OWNER" "$CHECK_DIR"; fi
say "running 'safebench reproduce $EXPERIMENT --smoke' in $IMAGE as $OWNER;" \
  "$CHECK_DIR -> /app/results"
start=$SECONDS
if ! "$D" run --rm --shm-size=2g --user "$OWNER" -v "$CHECK_DIR:/app/results" "$IMAGE" \
  safebench reproduce "$EXPERIMENT" --smoke 2>&1 | tee "$CHECK_DIR/reproduce.log"; then
  die "'safebench reproduce $EXPERIMENT --smoke' failed in the container" \
    "(log: $CHECK_DIR/reproduce.log)"
fi
note "reproduce $EXPERIMENT --smoke in $IMAGE: $((SECONDS - start)) s"

# ---- 5. the report on the host -------------------------------------------------------------
for file in report.md report.html; do
  path="$SMOKE_DIR/report/$file"
  [ -s "$path" ] || die "$path is missing or empty: the report did not land on the host"
  [ "$(stat -c '%u:%g' "$path")" = "$OWNER" ] \
    || die "$path belongs to $(stat -c '%u:%g' "$path"), not to $OWNER"
done
runs="$(find "$SMOKE_DIR" -name status.json | wc -l)"
done_runs="$(find "$SMOKE_DIR" -name status.json -exec grep -l -E '"status": *"done"' {} + | wc -l)"
if [ "$runs" -eq 0 ] || [ "$runs" -ne "$done_runs" ]; then
  die "$done_runs of $runs runs are done in $SMOKE_DIR"
fi
note "report on the host: $SMOKE_DIR/report/report.md ($done_runs/$runs runs done, owner $OWNER)"

# ---- 6. the CUDA variant -------------------------------------------------------------------
if [ "$CUDA" = 1 ]; then
  base="$(base_for cuda)"
  build "$CUDA_IMAGE" cuda "$base"
  gpu=()
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then gpu=(--gpus all); fi
  probe='import torch, safebench
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())'
  out="$("$D" run --rm "${gpu[@]}" "$CUDA_IMAGE" python -c "$probe")" \
    || die "torch does not import in $CUDA_IMAGE"
  note "$CUDA_IMAGE ${gpu[*]:-(no GPU here)}: $out"
fi

say "OK — summary in $SUMMARY"
cat "$SUMMARY"
