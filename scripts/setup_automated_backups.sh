#!/usr/bin/env bash
# Automated, encrypted, verified backups where the `backup` controller does not run (it runs inside
# `singularity-ops run` and as the compose `backup` service: there, do not install this as well).
#
# Creates the backup key if it is missing (mode 0600), writes an environment file with the settings the backups
# need, and installs a systemd timer pair (daily, weekly; Persistent: a missed run is made up at boot), or crontab
# lines where systemd is not running. Each run is `singularity-ops backup create --kind KIND --notify`, then
# `singularity-ops backup prune`. Running it again replaces what it installed; --uninstall removes it (never the
# key: the backups need it). docs/BACKUPS.md#automated-backups-without-the-controller.
#
#   scripts/setup_automated_backups.sh [--daily HH:MM] [--weekly "DAY HH:MM"] [--key FILE] [--bin COMMAND]
#                                      [--mode auto|systemd|cron] [--unit-dir DIR] [--config-dir DIR] [--uninstall]
# Defaults: daily 03:00, weekly "sun 04:00"; the key $SINGULARITY_BACKUP_KEY_FILE, else CONFIG_DIR/backup.key;
# CONFIG_DIR (key, backup.env) /etc/singularity-ops as root, else ~/.config/singularity-ops.
set -euo pipefail

DAILY="03:00"
WEEKLY="sun 04:00"
MODE=auto
UNINSTALL=0
BIN=""
UNIT_DIR=""
CONFIG_DIR=""
TAG="# singularity-ops-backup"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"

die() { echo "setup_automated_backups: $*" >&2; exit 2; }
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --daily) DAILY="${2:?--daily needs HH:MM}"; shift 2 ;;
    --weekly) WEEKLY="${2:?--weekly needs \"DAY HH:MM\"}"; shift 2 ;;
    --key) SINGULARITY_BACKUP_KEY_FILE="${2:?--key needs a file}"; shift 2 ;;
    --bin) BIN="${2:?--bin needs a command}"; shift 2 ;;
    --mode) MODE="${2:?--mode needs auto, systemd or cron}"; shift 2 ;;
    --unit-dir) UNIT_DIR="${2:?--unit-dir needs a folder}"; shift 2 ;;
    --config-dir) CONFIG_DIR="${2:?--config-dir needs a folder}"; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# HH:MM -> "M H" (cron) and "HH:MM:00" (systemd)
clock() {
  [[ "$1" =~ ^([01]?[0-9]|2[0-3]):([0-5][0-9])$ ]] || die "bad time '$1'; write HH:MM, e.g. 03:00"
  CRON_TIME="$((10#${BASH_REMATCH[2]})) $((10#${BASH_REMATCH[1]}))"
  CALENDAR_TIME="$(printf '%02d:%02d:00' "$((10#${BASH_REMATCH[1]}))" "$((10#${BASH_REMATCH[2]}))")"
}
clock "$DAILY"; DAILY_CRON="$CRON_TIME * * *"; DAILY_CALENDAR="*-*-* $CALENDAR_TIME"
read -r WEEKDAY WEEKLY_TIME <<<"$WEEKLY"
WEEKDAY="$(tr '[:upper:]' '[:lower:]' <<<"${WEEKDAY:0:3}")"
case "$WEEKDAY" in
  sun) DOW=0 ;; mon) DOW=1 ;; tue) DOW=2 ;; wed) DOW=3 ;; thu) DOW=4 ;; fri) DOW=5 ;; sat) DOW=6 ;;
  *) die "bad day in --weekly '$WEEKLY'; write e.g. \"sun 04:00\"" ;;
esac
clock "${WEEKLY_TIME:-}"; WEEKLY_CRON="$CRON_TIME * * $DOW"; WEEKLY_CALENDAR="${WEEKDAY^} *-*-* $CALENDAR_TIME"

if [ "$(id -u)" = 0 ]; then
  DEFAULT_CONFIG_DIR=/etc/singularity-ops; SYSTEMD_DIR=/etc/systemd/system; SCOPE=()
else
  DEFAULT_CONFIG_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/singularity-ops"
  SYSTEMD_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"; SCOPE=(--user)
fi
CONFIG_DIR="${CONFIG_DIR:-$DEFAULT_CONFIG_DIR}"
SYSTEMD_DIR="${UNIT_DIR:-$SYSTEMD_DIR}"
ENV_FILE="$CONFIG_DIR/backup.env"
KEY_FILE="${SINGULARITY_BACKUP_KEY_FILE:-$CONFIG_DIR/backup.key}"

if [ "$MODE" = auto ]; then
  if command -v "$SYSTEMCTL" >/dev/null && { [ -n "$UNIT_DIR" ] || [ -d /run/systemd/system ]; }; then MODE=systemd
  elif command -v crontab >/dev/null; then MODE=cron
  else die "neither systemd nor cron is available; run 'singularity-ops controller backup' as a service instead"
  fi
fi
[ "$MODE" = systemd ] || [ "$MODE" = cron ] || die "--mode is auto, systemd or cron, not '$MODE'"

uninstall_systemd() {
  "$SYSTEMCTL" "${SCOPE[@]}" disable --now singularity-ops-backup-daily.timer singularity-ops-backup-weekly.timer \
    >/dev/null 2>&1 || true
  rm -f "$SYSTEMD_DIR"/singularity-ops-backup@.service "$SYSTEMD_DIR"/singularity-ops-backup-daily.timer \
    "$SYSTEMD_DIR"/singularity-ops-backup-weekly.timer
  "$SYSTEMCTL" "${SCOPE[@]}" daemon-reload >/dev/null 2>&1 || true
}
uninstall_cron() {
  local current
  current="$(crontab -l 2>/dev/null || true)"
  if grep -qF "$TAG" <<<"$current"; then { grep -vF "$TAG" <<<"$current" || true; } | crontab -; fi
}

if [ "$UNINSTALL" = 1 ]; then
  if [ "$MODE" = systemd ]; then uninstall_systemd; else uninstall_cron; fi
  echo "automated backups removed ($MODE); kept $KEY_FILE and $ENV_FILE: the backups need the key"
  exit 0
fi

if [ -z "$BIN" ]; then
  BIN="$(command -v singularity-ops || true)"
  [ -n "$BIN" ] || die "singularity-ops is not on PATH; pass --bin /path/to/singularity-ops"
fi
read -r -a BIN_WORDS <<<"$BIN"
[ -x "$(command -v "${BIN_WORDS[0]}" || true)" ] || die "'${BIN_WORDS[0]}' is not an executable; fix --bin"
BIN_WORDS[0]="$(command -v "${BIN_WORDS[0]}")"
BIN="${BIN_WORDS[*]}"

mkdir -p "$CONFIG_DIR"
chmod 700 "$CONFIG_DIR"
if [ ! -e "$KEY_FILE" ]; then
  "${BIN_WORDS[@]}" backup keygen --output "$KEY_FILE" >/dev/null
  echo "created backup key $KEY_FILE: keep a copy away from this machine, without it no backup can be read"
fi

# The settings the backups run with, as this shell has them now; values are single-quoted for sh and systemd.
umask 077
{
  echo "# written by scripts/setup_automated_backups.sh; re-run it to change"
  echo "SINGULARITY_BACKUP_KEY_FILE='$KEY_FILE'"
  for name in SINGULARITY_HOME SINGULARITY_CONFIG SINGULARITY_DATABASE_URL SINGULARITY_ALERTMANAGER_URL PATH; do
    value="${!name:-}"
    [ -n "$value" ] || continue
    [[ "$value" != *"'"* ]] || die "$name contains a single quote, which the environment file cannot hold"
    echo "$name='$value'"
  done
} >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"

if [ "$MODE" = systemd ]; then
  uninstall_cron 2>/dev/null || true
  mkdir -p "$SYSTEMD_DIR"
  cat >"$SYSTEMD_DIR/singularity-ops-backup@.service" <<EOF
[Unit]
Description=Singularity Ops %i backup (encrypted, verified)
Documentation=https://github.com/singularity-ops/singularity-ops/blob/main/docs/BACKUPS.md
After=network-online.target postgresql.service

[Service]
Type=oneshot
EnvironmentFile=$ENV_FILE
ExecStart=$BIN backup create --kind %i --notify
ExecStartPost=$BIN backup prune
Nice=10
IOSchedulingClass=idle
EOF
  for kind in daily weekly; do
    if [ "$kind" = daily ]; then calendar="$DAILY_CALENDAR"; else calendar="$WEEKLY_CALENDAR"; fi
    cat >"$SYSTEMD_DIR/singularity-ops-backup-$kind.timer" <<EOF
[Unit]
Description=Singularity Ops $kind backup

[Timer]
OnCalendar=$calendar
Persistent=true
Unit=singularity-ops-backup@$kind.service

[Install]
WantedBy=timers.target
EOF
  done
  "$SYSTEMCTL" "${SCOPE[@]}" daemon-reload
  "$SYSTEMCTL" "${SCOPE[@]}" enable --now singularity-ops-backup-daily.timer singularity-ops-backup-weekly.timer
  echo "installed systemd timers in $SYSTEMD_DIR: daily $DAILY_CALENDAR, weekly $WEEKLY_CALENDAR"
  echo "see them with: systemctl ${SCOPE[*]} list-timers 'singularity-ops-backup-*'"
else
  job() { echo "$1 set -a; . '$ENV_FILE'; set +a; $BIN backup create --kind $2 --notify && $BIN backup prune $TAG"; }
  current="$(crontab -l 2>/dev/null || true)"  # read in full before the table is replaced
  {
    if [ -n "$current" ]; then grep -vF "$TAG" <<<"$current" || true; fi
    job "$DAILY_CRON" daily
    job "$WEEKLY_CRON" weekly
  } | crontab -
  echo "installed crontab lines: daily '$DAILY_CRON', weekly '$WEEKLY_CRON' (cron mails their output, if set up)"
fi
