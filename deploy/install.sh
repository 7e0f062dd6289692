#!/usr/bin/env bash
# Installs (or upgrades) the data platform on a Debian 12 / Ubuntu 24.04 VM, as root, from this checkout:
#   sudo deploy/install.sh                          # install or upgrade
#   sudo WITH_LOCAL_POSTGRES=1 deploy/install.sh    # also install PostgreSQL here with the dagster role/db
#   sudo INSTALL_ROLE=worker deploy/install.sh      # a Celery worker machine (PLATFORM_EXECUTOR=celery): the
#                                                   # same code and environment file, only the worker unit
# Idempotent: every step checks before it changes anything, so re-running it is an upgrade (new code,
# same state). It never overwrites /etc/dataplatform/platform.env and never touches the data directory or
# the Dagster database beyond Dagster's own migrations.
#
# Rehearsal into a throwaway directory, as any user (tests/test_deployment_smoke.py does this):
#   INSTALL_ROOT=/tmp/rehearsal [UV=/path/to/uv] deploy/install.sh
# puts every path under $INSTALL_ROOT (opt/, var/lib/, etc/), owned by the invoking user, and writes the
# units to $INSTALL_ROOT/etc/systemd/system with their paths and User= moved there too; it installs no
# Debian package, creates no system user and calls no systemctl, so the units are started by whoever
# rehearses. Without INSTALL_ROOT nothing of this applies.
set -euo pipefail

ROOT="${INSTALL_ROOT:-}"
APP_USER="${APP_USER:-dataplatform}"
APP_GROUP="$APP_USER"
ROOT_OWNER=root
ROOT_GROUP=root
if [[ -n "$ROOT" ]]; then
    ROOT="$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)"
    APP_USER="$(id -un)"
    APP_GROUP="$(id -gn)"
    ROOT_OWNER="$APP_USER"
    ROOT_GROUP="$APP_GROUP"
fi
PREFIX="$ROOT/opt/dataplatform"
APP_DIR="$PREFIX/app"
VENV="$PREFIX/venv"
TOOLS="$PREFIX/tools"
UV="${UV:-$TOOLS/bin/uv}"
STATE="$ROOT/var/lib/dataplatform"
DAGSTER_HOME_DIR="$STATE/dagster_home"
DATA_DIR="$STATE/data"
CONF_DIR="$ROOT/etc/dataplatform"
ENV_FILE="$CONF_DIR/platform.env"
UNIT_DIR="$ROOT/etc/systemd/system"
ROLE="${INSTALL_ROLE:-orchestrator}"
case "$ROLE" in
    orchestrator) UNITS=(dataplatform-code-server.service dataplatform-webserver.service dataplatform-daemon.service dataplatform-metrics.service) ;;
    worker) UNITS=(dataplatform-celery-worker.service) ;;
    *) echo "install.sh: INSTALL_ROLE=$ROLE is neither orchestrator (the default) nor worker" >&2; exit 1 ;;
esac
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '==> %s\n' "$*"; }

if [[ -z "$ROOT" && $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0), or rehearse with INSTALL_ROOT=<dir>" >&2
    exit 1
fi
if [[ -n "$ROOT" && "${WITH_LOCAL_POSTGRES:-0}" == 1 ]]; then
    echo "install.sh: WITH_LOCAL_POSTGRES installs a system service; not in a rehearsal" >&2
    exit 1
fi

if [[ -z "$ROOT" ]]; then
    log "system packages"
    packages=(python3 python3-venv rsync ca-certificates git)
    missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if ((${#missing[@]})); then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi

    log "user $APP_USER"
    if ! id -u "$APP_USER" >/dev/null 2>&1; then
        useradd --system --user-group --home-dir "$PREFIX" --no-create-home --shell /usr/sbin/nologin "$APP_USER"
    fi
fi

log "directories"
install -d -m 0755 -o "$ROOT_OWNER" -g "$ROOT_GROUP" "$PREFIX" "$APP_DIR"
install -d -m 0750 -o "$APP_USER" -g "$APP_GROUP" "$STATE" "$DAGSTER_HOME_DIR" "$DATA_DIR"
install -d -m 0750 -o "$ROOT_OWNER" -g "$APP_GROUP" "$CONF_DIR"

log "application code -> $APP_DIR"
if [[ "$SRC" != "$APP_DIR" ]]; then
    rsync -a --delete \
        --exclude .git/ --exclude .venv/ --exclude .platform_data/ --exclude __pycache__/ \
        --exclude dbt_project/target/ --exclude dbt_project/logs/ --exclude dbt_project/dbt_packages/ \
        "$SRC/" "$APP_DIR/"
fi
# dbt writes its manifest and logs inside the project: the only part of the code the service may write.
install -d -o "$APP_USER" -g "$APP_GROUP" "$APP_DIR/dbt_project/target" "$APP_DIR/dbt_project/logs"
chown -R "$APP_USER:$APP_GROUP" "$APP_DIR/dbt_project"

if [[ "$UV" == "$TOOLS/bin/uv" && ! -x "$UV" ]]; then
    log "uv (from PyPI) -> $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --upgrade uv
fi

log "virtualenv $VENV (uv sync --frozen: exactly the versions of uv.lock)"
UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync --frozen --no-dev --python python3 --project "$APP_DIR"

log "environment file $ENV_FILE"
if [[ ! -f "$ENV_FILE" ]]; then
    install -m 0640 -o "$ROOT_OWNER" -g "$APP_GROUP" "$APP_DIR/deploy/platform.env.example" "$ENV_FILE"
    log "created $ENV_FILE from the template: fill in its CHANGE_ME values, then re-run this script"
fi

log "Dagster instance $DAGSTER_HOME_DIR/dagster.yaml"
install -m 0640 -o "$ROOT_OWNER" -g "$APP_GROUP" "$APP_DIR/deploy/dagster.yaml" "$DAGSTER_HOME_DIR/dagster.yaml"

if [[ "${WITH_LOCAL_POSTGRES:-0}" == 1 ]]; then
    log "local PostgreSQL"
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    fi
    systemctl enable --now postgresql
fi

configured=1
# A value, not the template's comment that says to replace them.
grep -q '^[^#]*CHANGE_ME' "$ENV_FILE" && configured=0

if [[ "${WITH_LOCAL_POSTGRES:-0}" == 1 && $configured == 1 ]]; then
    # Role and database of the instance storage, with the password of the environment file.
    pg_user="$(sed -n 's/^DAGSTER_PG_USER=//p' "$ENV_FILE")"
    pg_db="$(sed -n 's/^DAGSTER_PG_DB=//p' "$ENV_FILE")"
    pg_password="$(sed -n 's/^DAGSTER_PG_PASSWORD=//p' "$ENV_FILE")"
    psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
    if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$pg_user'")" != 1 ]]; then
        psql_admin -c "CREATE ROLE \"$pg_user\" LOGIN"
    fi
    psql_admin -v password="$pg_password" <<<"ALTER ROLE \"$pg_user\" PASSWORD :'password';"
    if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$pg_db'")" != 1 ]]; then
        psql_admin -c "CREATE DATABASE \"$pg_db\" OWNER \"$pg_user\""
    fi
fi

as_app=(runuser -u "$APP_USER" --)
[[ -n "$ROOT" ]] && as_app=()  # a rehearsal runs as its invoking user, who owns everything
run_as_app() {
    "${as_app[@]}" env DAGSTER_HOME="$DAGSTER_HOME_DIR" PLATFORM_DATA_DIR="$DATA_DIR" \
        bash -c 'set -a; . "$0"; set +a; cd "$1"; shift 2; exec "$@"' "$ENV_FILE" "$APP_DIR" _ "$@"
}

log "systemd units -> $UNIT_DIR"
install -d -m 0755 "$UNIT_DIR"
for unit in "${UNITS[@]}"; do
    if [[ -z "$ROOT" ]]; then
        install -m 0644 -o root -g root "$APP_DIR/deploy/systemd/$unit" "$UNIT_DIR/$unit"
    else
        sed -e "s#/opt/dataplatform#$PREFIX#g" -e "s#/var/lib/dataplatform#$STATE#g" \
            -e "s#/etc/dataplatform#$CONF_DIR#g" -e "s#^User=.*#User=$APP_USER#" -e "s#^Group=.*#Group=$APP_GROUP#" \
            "$APP_DIR/deploy/systemd/$unit" >"$UNIT_DIR/$unit"
    fi
done
if [[ -z "$ROOT" ]]; then
    systemctl daemon-reload
    systemctl enable "${UNITS[@]}"
fi

if [[ $configured == 0 ]]; then
    log "not started: $ENV_FILE still has CHANGE_ME values. Fill them in and re-run $0."
    exit 0
fi

log "dbt manifest and instance migration"
run_as_app "$VENV/bin/dataplatform" prepare
run_as_app "$VENV/bin/dagster" instance migrate

if [[ -n "$ROOT" ]]; then
    log "rehearsal done: start the units of $UNIT_DIR yourself (their ExecStart, Environment, WorkingDirectory)"
    exit 0
fi

log "(re)start"
systemctl restart "${UNITS[@]}"
systemctl --no-pager --lines=0 status "${UNITS[@]}" || true
if [[ "$ROLE" == worker ]]; then
    log "done: Celery worker started (journalctl -u dataplatform-celery-worker -f)"
else
    log "done: UI on http://127.0.0.1:3000 (put deploy/nginx/dagster.conf in front), metrics on 127.0.0.1:9464"
fi
