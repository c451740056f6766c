# PostgreSQL 15 on a loopback port (TESTBED.md): a throwaway cluster in DIR/data, trust
# authentication for a `jarvis` role that owns a `jarvis` database, the socket in DIR.
# As root the server runs as the `postgres` user (initdb refuses root), so DIR is opened to it.
# Emits POSTGRES_PORT and DATABASE_URL. A restart in the same DIR keeps the data.
start() {
  local bin port
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  need "$bin/initdb" "$bin/postgres" "$bin/pg_isready" "$bin/psql"
  port=$(port_for POSTGRES_PORT)
  local as=()
  if is_root; then
    chmod 755 "$DIR"
    as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    mkdir -p "$DIR/data"
    is_root && chown postgres:postgres "$DIR/data"
    "${as[@]}" "$bin/initdb" -A trust --no-sync -U postgres -D "$DIR/data" >"$DIR/initdb.log" 2>&1 \
      || { tail -n 20 "$DIR/initdb.log" >&2; return 1; }
  fi
  # The socket goes into its own folder the server may write to.
  mkdir -p "$DIR/socket"
  is_root && chown postgres:postgres "$DIR/socket"
  spawn postgres "${as[@]}" "$bin/postgres" -D "$DIR/data" -p "$port" -k "$DIR/socket" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200
  if ! wait_for 30 "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    tail -n 20 "$DIR/postgres.log" >&2
    return 1
  fi
  if [ "$("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'jarvis'")" != 1 ]; then
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE ROLE jarvis LOGIN" \
      -c "CREATE DATABASE jarvis OWNER jarvis" >>"$DIR/psql.log" 2>&1
  fi
  emit POSTGRES_PORT "$port"
  emit POSTGRES_BIN "$bin"
  emit DATABASE_URL "postgres://jarvis@127.0.0.1:$port/jarvis"
}
