# Sourced by scripts/*.sh: a project virtualenv with ferroq built and installed in it.
# Usage: ensure_venv [pip extras]   ->  sets $venv
ensure_venv() {
    local extras=${1:-}
    if ! command -v cargo >/dev/null 2>&1; then
        echo "ferroq needs a Rust toolchain (cargo) to build its engine; install it with rustup." >&2
        exit 1
    fi
    local missing=()
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    # The extension links the system SQLite, the library Python's sqlite3 module uses.
    pkg-config --exists sqlite3 2>/dev/null || missing+=(libsqlite3-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing build requirements: ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    local python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "ferroq needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }
    venv=${FERROQ_VENV:-$root/.venv}
    if [ ! -x "$venv/bin/python" ]; then
        echo "== creating $venv"
        "$python" -m venv "$venv"
    fi
    echo "== building ferroq into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
}

# rustfmt and clippy, which the test command runs as gates.
ensure_rust_lints() {
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        echo "== installing rustfmt and clippy"
        rustup component add rustfmt clippy
    fi
}

# Make sure PostgreSQL answers at $FERROQ_TEST_DATABASE_URL (default: the local server),
# starting the local cluster, or else a throwaway one on port 5433, and that its database exists.
ensure_postgres() {
    export FERROQ_TEST_DATABASE_URL=${FERROQ_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
    if ! command -v pg_isready >/dev/null 2>&1; then
        echo "== installing PostgreSQL"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
    pg_answers() { pg_isready -q -d "$FERROQ_TEST_DATABASE_URL" 2>/dev/null; }
    if ! pg_answers && [ -d /etc/postgresql ]; then
        echo "== PostgreSQL does not answer; starting the local cluster"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
        for _ in $(seq 1 30); do pg_answers && break; sleep 0.5; done
    fi
    if ! pg_answers; then
        echo "== starting a throwaway PostgreSQL cluster on port 5433"
        local bindir data
        bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
        data=$(mktemp -d /tmp/ferroq-pg.XXXXXX)
        run_as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else sh -c "$*"; fi; }
        [ "$(id -u)" = 0 ] && chown postgres "$data"
        run_as_postgres "$bindir/initdb -D $data -U postgres --auth=trust" >/dev/null
        run_as_postgres "$bindir/pg_ctl -D $data -l $data/log -o '-p 5433 -k /tmp' -w start" >/dev/null
        export FERROQ_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5433/test
    fi
    pg_answers || { echo "PostgreSQL is not reachable at $FERROQ_TEST_DATABASE_URL" >&2; exit 1; }
    local database=${FERROQ_TEST_DATABASE_URL##*/}
    database=${database%%\?*}
    local admin_url=${FERROQ_TEST_DATABASE_URL%/*}/postgres
    if ! psql -qtA "$admin_url" -c "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
        psql -q "$admin_url" -c "CREATE DATABASE \"$database\""
    fi
}
