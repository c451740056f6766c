# OpenLDAP slapd with a dc=example,dc=com tree on a loopback port, STARTTLS with a self-signed
# certificate (TESTBED.md). Emits LDAP_PORT, LDAP_URL, LDAP_BASE, LDAP_BIND_DN, LDAP_PASSWORD
# and LDAP_CA_FILE (the CA to trust for STARTTLS).
#
# Seeded under ou=Hosts: cn=loki (description "production"), cn=plain (not in production).
# The schema adds openssh-lpk's ldapPublicKey, which many sites use for SSH keys.
# A restart in the same DIR keeps the database, the password and the certificate.
start() {
  need slapd slapadd ldapsearch openssl
  local port base=dc=example,dc=com admin password
  port=$(port_for LDAP_PORT)
  admin="cn=admin,$base"
  [ -f "$DIR/password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/password"
  password=$(cat "$DIR/password")
  [ -f "$DIR/cert.pem" ] || make_certificate
  cat > "$DIR/openssh-lpk.schema" <<'SCHEMA'
attributetype ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
	DESC 'MANDATORY: OpenSSH Public key'
	EQUALITY octetStringMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
objectclass ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY
	DESC 'MANDATORY: OpenSSH LPK objectclass'
	MAY ( sshPublicKey $ uid ) )
SCHEMA
  cat > "$DIR/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
include $DIR/openssh-lpk.schema
pidfile $DIR/slapd.real.pid
argsfile $DIR/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile $DIR/cert.pem
TLSCertificateKeyFile $DIR/key.pem
database mdb
maxsize 16777216
suffix "$base"
rootdn "$admin"
rootpw $password
directory $DIR/db
index objectClass eq
index cn eq
CONF
  if [ ! -f "$DIR/db/data.mdb" ]; then
    mkdir -p "$DIR/db"
    slapadd -q -f "$DIR/slapd.conf" <<LDIF
dn: $base
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=Hosts,$base
objectClass: organizationalUnit
ou: Hosts

dn: cn=loki,ou=Hosts,$base
objectClass: device
objectClass: ipHost
cn: loki
ipHostNumber: 192.0.2.10
description: production

dn: cn=plain,ou=Hosts,$base
objectClass: device
objectClass: ipHost
cn: plain
ipHostNumber: 192.0.2.20
description: a test box
LDIF
  fi
  if [ -f "$DIR/slapd.pid" ] && kill -0 "$(cat "$DIR/slapd.pid")" 2>/dev/null; then
    echo "testbed: slapd already runs in $DIR (stop it first)" >&2
    exit 1
  fi
  spawn slapd "$(command -v slapd)" -f "$DIR/slapd.conf" -h "ldap://127.0.0.1:$port/" -d stats
  wait_port "$port"
  wait_for 20 ldapsearch -x -H "ldap://127.0.0.1:$port/" -D "$admin" -w "$password" -b "$base" -s base
  kill -0 "$(cat "$DIR/slapd.pid")" 2>/dev/null || { echo "testbed: slapd exited, see $DIR/slapd.log" >&2; exit 1; }
  emit LDAP_PORT "$port"
  emit LDAP_URL "ldap://127.0.0.1:$port"
  emit LDAP_BASE "$base"
  emit LDAP_BIND_DN "$admin"
  emit LDAP_PASSWORD "$password"
  emit LDAP_CA_FILE "$DIR/ca.pem"
}

# A throwaway CA and a server certificate for 127.0.0.1 signed by it (TLS libraries such as
# rustls refuse a self-signed CA certificate used as the server's own).
make_certificate() {
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=jarvis testbed CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req "${ec[@]}" -subj /CN=localhost -keyout "$DIR/key.pem" -out "$DIR/cert.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$DIR/cert.ext"
  openssl x509 -req -in "$DIR/cert.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 30 -extfile "$DIR/cert.ext" -out "$DIR/cert.pem" 2>/dev/null
}
