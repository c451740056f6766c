# Prosody 0.12 on a loopback port (TESTBED.md): virtual host `localhost` with the users
# jarvis, alice and mallory; MUC `conference.localhost`, whose rooms show real JIDs to
# everyone (non-anonymous), and MUC `anon.localhost`, whose rooms show them to moderators only
# (semi-anonymous). c2s offers STARTTLS with a certificate from a throwaway CA (XMPP_CA_FILE)
# but does not require it, so loopback clients may stay plain.
# Emits XMPP_PORT, XMPP_DOMAIN, XMPP_MUC, XMPP_MUC_SEMIANON, XMPP_CA_FILE and
# XMPP_PASSWORD_JARVIS, XMPP_PASSWORD_ALICE, XMPP_PASSWORD_MALLORY.
start() {
  need prosody prosodyctl openssl
  local port domain=localhost
  port=$(port_for XMPP_PORT)
  mkdir -p "$DIR/data" "$DIR/certs"
  make_certs "$domain"
  cat > "$DIR/prosody.cfg.lua" <<CONF
-- Written by tests/testbed/servers/prosody.sh; state lives in this folder only.
run_as_root = true
pidfile = "$DIR/prosody.real.pid"
data_path = "$DIR/data"
log = { { levels = { min = "info" }, to = "file", filename = "$DIR/prosody-server.log" } }
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { }
s2s_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = {
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "smacks"; "carbons";
}
modules_disabled = { "s2s"; "s2s_bidi"; "dialback"; "http"; "offline" }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = false
-- Tests open many sessions at once from one address.
limits = { }
-- Without it Prosody holds a small answer back until the client ACKs the last segment
-- (Nagle), which a client's delayed ACK turns into a 40 ms stall (README, benchmarks).
network_settings = { nagle = false }
ssl = {
  certificate = "$DIR/certs/$domain.crt";
  key = "$DIR/certs/$domain.key";
}

VirtualHost "$domain"

Component "conference.$domain" "muc"
  muc_room_locking = false
  muc_room_default_public_jids = true
  muc_room_default_history_length = 20
  restrict_room_creation = false

Component "anon.$domain" "muc"
  muc_room_locking = false
  muc_room_default_public_jids = false
  muc_room_default_history_length = 20
  restrict_room_creation = false
CONF
  local user pw
  for user in jarvis alice mallory; do
    pw=$( (sed -n "s/^XMPP_PASSWORD_${user^^}=//p" "$DIR/env" 2>/dev/null || true) | tail -n 1)
    [ -n "$pw" ] || pw="$user-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    prosodyctl --config "$DIR/prosody.cfg.lua" register "$user" "$domain" "$pw" \
      >>"$DIR/prosodyctl.log" 2>&1
    emit "XMPP_PASSWORD_${user^^}" "$pw"
  done
  spawn prosody "$(command -v prosody)" -F --config "$DIR/prosody.cfg.lua"
  if ! wait_port "$port"; then
    tail -n 20 "$DIR/prosody-server.log" "$DIR/prosody.log" >&2 2>/dev/null
    return 1
  fi
  emit XMPP_PORT "$port"
  emit XMPP_DOMAIN "$domain"
  emit XMPP_MUC "conference.$domain"
  emit XMPP_MUC_SEMIANON "anon.$domain"
  emit XMPP_CA_FILE "$DIR/certs/ca.crt"
}

# A throwaway CA and a certificate for DOMAIN signed by it (rustls refuses a self-signed CA
# certificate as a server certificate, so the two are separate). Kept across restarts.
make_certs() {
  local domain=$1 c="$DIR/certs"
  [ -f "$c/$domain.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=jarvis test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$c/ca.key" -out "$c/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$domain" \
    -keyout "$c/$domain.key" -out "$c/$domain.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:%s,DNS:conference.%s,DNS:anon.%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    "$domain" "$domain" "$domain" > "$c/ext.cnf"
  openssl x509 -req -in "$c/$domain.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" \
    -CAcreateserial -days 30 -extfile "$c/ext.cnf" -out "$c/$domain.crt" >/dev/null 2>&1
  chmod 600 "$c/$domain.key" "$c/ca.key"
}
