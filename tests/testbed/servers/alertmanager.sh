# Prometheus Alertmanager on a loopback port, without clustering (TESTBED.md).
# Emits ALERTMANAGER_PORT and ALERTMANAGER_URL. A restart in the same DIR keeps its silences.
start() {
  need prometheus-alertmanager
  local port
  port=$(port_for ALERTMANAGER_PORT)
  mkdir -p "$DIR/data"
  cat > "$DIR/alertmanager.yml" <<CONF
route:
  receiver: nobody
receivers:
  - name: nobody
CONF
  if [ -f "$DIR/alertmanager.pid" ] && kill -0 "$(cat "$DIR/alertmanager.pid")" 2>/dev/null; then
    echo "testbed: alertmanager already runs in $DIR (stop it first)" >&2
    exit 1
  fi
  spawn alertmanager "$(command -v prometheus-alertmanager)" \
    --config.file="$DIR/alertmanager.yml" \
    --storage.path="$DIR/data" \
    --web.listen-address="127.0.0.1:$port" \
    --cluster.listen-address= \
    --log.level=warn
  wait_port "$port"
  wait_for 20 alertmanager_ready "$port"
  kill -0 "$(cat "$DIR/alertmanager.pid")" 2>/dev/null || { echo "testbed: alertmanager exited, see $DIR/alertmanager.log" >&2; exit 1; }
  emit ALERTMANAGER_PORT "$port"
  emit ALERTMANAGER_URL "http://127.0.0.1:$port"
}

# True when Alertmanager answers 200 on /-/ready (it listens before it has read its state).
alertmanager_ready() {
  local status
  exec 3<>/dev/tcp/127.0.0.1/"$1" || return 1
  printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  read -r _ status _ <&3
  exec 3<&-
  [ "$status" = 200 ]
}
