# BIND 9 as the primary of example.com on a loopback port, taking TSIG-signed UPDATEs
# (TESTBED.md). Emits DNS_PORT, DNS_SERVER, DNS_ZONE, DNS_TSIG_NAME, DNS_TSIG_SECRET (the key
# that may update the zone) and DNS_OTHER_TSIG_NAME, DNS_OTHER_TSIG_SECRET (a key the server
# knows that may not update, for REFUSED).
#
# Seeded records: loki.example.com (A, SSHFP: the "old" host), wide.example.com (100 A
# records, so its answer does not fit a UDP datagram and a client must use TCP).
# A restart in the same DIR keeps the keys and the zone with its journal.
start() {
  need named tsig-keygen dig
  local port zone=example.com
  port=$(port_for DNS_PORT)
  [ -f "$DIR/jarvis.key" ] || tsig-keygen -a hmac-sha256 dns-jarvis > "$DIR/jarvis.key"
  [ -f "$DIR/other.key" ] || tsig-keygen -a hmac-sha256 dns-other > "$DIR/other.key"
  mkdir -p "$DIR/keys"
  cat > "$DIR/named.conf" <<CONF
include "$DIR/jarvis.key";
include "$DIR/other.key";
controls { };
options {
  directory "$DIR";
  pid-file "$DIR/named.real.pid";
  session-keyfile "$DIR/session.key";
  managed-keys-directory "$DIR/keys";
  listen-on port $port { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  notify no;
  dnssec-validation no;
  allow-query { 127.0.0.1; };
};
zone "$zone" {
  type primary;
  file "$DIR/$zone.zone";
  allow-update { key "dns-jarvis"; };
};
CONF
  if [ ! -f "$DIR/$zone.zone" ]; then
    {
      cat <<ZONE
\$ORIGIN $zone.
\$TTL 300
@     IN SOA ns1 hostmaster 1 3600 600 86400 300
@     IN NS  ns1
ns1   IN A   127.0.0.1
loki  IN A   192.0.2.10
loki  IN SSHFP 4 2 0000000000000000000000000000000000000000000000000000000000000000
loki  IN TXT "kept by jarvis"
ZONE
      for i in $(seq 1 100); do echo "wide  IN A   198.51.100.$i"; done
    } > "$DIR/$zone.zone"
  fi
  if [ -f "$DIR/named.pid" ] && kill -0 "$(cat "$DIR/named.pid")" 2>/dev/null; then
    echo "testbed: bind already runs in $DIR (stop it first)" >&2
    exit 1
  fi
  spawn named "$(command -v named)" -g -4 -n 2 -c "$DIR/named.conf"
  wait_port "$port"
  wait_for 20 zone_answers "$port" "$zone"
  kill -0 "$(cat "$DIR/named.pid")" 2>/dev/null || { echo "testbed: named exited, see $DIR/named.log" >&2; exit 1; }
  emit DNS_PORT "$port"
  emit DNS_SERVER "127.0.0.1:$port"
  emit DNS_ZONE "$zone"
  emit DNS_TSIG_NAME dns-jarvis
  emit DNS_TSIG_SECRET "$(key_secret "$DIR/jarvis.key")"
  emit DNS_OTHER_TSIG_NAME dns-other
  emit DNS_OTHER_TSIG_SECRET "$(key_secret "$DIR/other.key")"
}

# True when the server answers the zone's SOA (it listens before it has loaded the zone).
zone_answers() {
  [ -n "$(dig +short +time=1 +tries=1 -p "$1" @127.0.0.1 "$2" SOA)" ]
}

key_secret() {
  sed -n 's/.*secret "\(.*\)";.*/\1/p' "$1"
}
