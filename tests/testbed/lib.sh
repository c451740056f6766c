# Helpers for tests/testbed/servers/*.sh. Sourced by tests/testbed/start.

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# The port remembered under KEY in $DIR/env (so a restart keeps its ports), or a new one.
port_for() {
  local key=$1 old
  old=$(sed -n "s/^$key=//p" "$DIR/env" 2>/dev/null | tail -n 1)
  if [ -n "$old" ]; then echo "$old"; else free_port; fi
}

# Waits until something accepts TCP connections on 127.0.0.1:PORT (default 20 s).
wait_port() {
  local port=$1 limit=${2:-20} i=0
  while ! (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt $((limit * 20)) ]; then
      echo "testbed: nothing listens on port $port after ${limit}s" >&2
      return 1
    fi
    sleep 0.05
  done
}

# Waits until COMMAND succeeds (default 20 s).
wait_for() {
  local limit=$1; shift
  local i=0
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt $((limit * 20)) ]; then
      echo "testbed: gave up waiting for: $*" >&2
      return 1
    fi
    sleep 0.05
  done
}

# Starts COMMAND in the background with its output in $DIR/NAME.log and its pid in
# $DIR/NAME.pid, so that tests/testbed/stop can find it.
spawn() {
  local name=$1; shift
  setsid "$@" >>"$DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

# Records KEY=VALUE in $DIR/env (replacing an older value) and prints it.
emit() {
  local key=$1 value=$2
  touch "$DIR/env"
  grep -v "^$key=" "$DIR/env" > "$DIR/env.new" || true
  echo "$key=$value" >> "$DIR/env.new"
  mv "$DIR/env.new" "$DIR/env"
}

# Fails with a clear line when a program the server needs is not installed.
need() {
  local prog
  for prog in "$@"; do
    if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "$prog" ]; then
      echo "testbed: $prog is not installed (run tests/testbed/install)" >&2
      exit 3
    fi
  done
}

is_root() { [ "$(id -u)" = 0 ]; }
