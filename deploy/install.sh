#!/usr/bin/env bash
# Installs (or upgrades) the data platform on a Debian 12 / Ubuntu 24.04 VM, as root, from this checkout:
#   sudo deploy/install.sh                          # install or upgrade
#   sudo WITH_LOCAL_POSTGRES=1 deploy/install.sh    # also install PostgreSQL here with the dagster role/db
# Idempotent: every step checks before it changes anything, so re-running it is an upgrade (new code,
# same state). It never overwrites /etc/dataplatform/platform.env and never touches the data directory or
# the Dagster database beyond Dagster's own migrations.
set -euo pipefail

APP_USER="${APP_USER:-dataplatform}"
PREFIX=/opt/dataplatform
APP_DIR="$PREFIX/app"
VENV="$PREFIX/venv"
TOOLS="$PREFIX/tools"
STATE=/var/lib/dataplatform
DAGSTER_HOME_DIR="$STATE/dagster_home"
DATA_DIR="$STATE/data"
CONF_DIR=/etc/dataplatform
ENV_FILE="$CONF_DIR/platform.env"
UNITS=(dataplatform-code-server.service dataplatform-webserver.service dataplatform-daemon.service dataplatform-metrics.service)
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '==> %s\n' "$*"; }

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi

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

log "directories"
install -d -m 0755 -o root -g root "$PREFIX" "$APP_DIR"
install -d -m 0750 -o "$APP_USER" -g "$APP_USER" "$STATE" "$DAGSTER_HOME_DIR" "$DATA_DIR"
install -d -m 0750 -o root -g "$APP_USER" "$CONF_DIR"

log "application code -> $APP_DIR"
if [[ "$SRC" != "$APP_DIR" ]]; then
    rsync -a --delete \
        --exclude .git/ --exclude .venv/ --exclude .platform_data/ --exclude __pycache__/ \
        --exclude dbt_project/target/ --exclude dbt_project/logs/ --exclude dbt_project/dbt_packages/ \
        "$SRC/" "$APP_DIR/"
fi
# dbt writes its manifest and logs inside the project: the only part of the code the service may write.
install -d -o "$APP_USER" -g "$APP_USER" "$APP_DIR/dbt_project/target" "$APP_DIR/dbt_project/logs"
chown -R "$APP_USER:$APP_USER" "$APP_DIR/dbt_project"

log "uv (from PyPI) -> $TOOLS"
if [[ ! -x "$TOOLS/bin/uv" ]]; then
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet --upgrade uv
fi

log "virtualenv $VENV (uv sync --frozen: exactly the versions of uv.lock)"
UV_PROJECT_ENVIRONMENT="$VENV" "$TOOLS/bin/uv" sync --frozen --no-dev --python python3 --project "$APP_DIR"

log "environment file $ENV_FILE"
if [[ ! -f "$ENV_FILE" ]]; then
    install -m 0640 -o root -g "$APP_USER" "$APP_DIR/deploy/platform.env.example" "$ENV_FILE"
    log "created $ENV_FILE from the template: fill in its CHANGE_ME values, then re-run this script"
fi

log "Dagster instance $DAGSTER_HOME_DIR/dagster.yaml"
install -m 0640 -o root -g "$APP_USER" "$APP_DIR/deploy/dagster.yaml" "$DAGSTER_HOME_DIR/dagster.yaml"

if [[ "${WITH_LOCAL_POSTGRES:-0}" == 1 ]]; then
    log "local PostgreSQL"
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    fi
    systemctl enable --now postgresql
fi

configured=1
grep -q CHANGE_ME "$ENV_FILE" && configured=0

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

run_as_app() {
    runuser -u "$APP_USER" -- env DAGSTER_HOME="$DAGSTER_HOME_DIR" PLATFORM_DATA_DIR="$DATA_DIR" \
        bash -c 'set -a; . "$0"; set +a; cd "$1"; shift 2; exec "$@"' "$ENV_FILE" "$APP_DIR" _ "$@"
}

log "systemd units"
for unit in "${UNITS[@]}"; do
    install -m 0644 -o root -g root "$APP_DIR/deploy/systemd/$unit" "/etc/systemd/system/$unit"
done
systemctl daemon-reload
systemctl enable "${UNITS[@]}"

if [[ $configured == 0 ]]; then
    log "not started: $ENV_FILE still has CHANGE_ME values. Fill them in and re-run $0."
    exit 0
fi

log "dbt manifest and instance migration"
run_as_app "$VENV/bin/dataplatform" prepare
run_as_app "$VENV/bin/dagster" instance migrate

log "(re)start"
systemctl restart "${UNITS[@]}"
systemctl --no-pager --lines=0 status "${UNITS[@]}" || true
log "done: UI on http://127.0.0.1:3000 (put deploy/nginx/dagster.conf in front), metrics on 127.0.0.1:9464"
