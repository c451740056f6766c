# InspIRCd 3 + Anope 2 services, linked over a second loopback port (TESTBED.md).
#
# Two client ports: IRC_PORT, where per-IP limits and flood limits are lifted for the test
# clients, and IRC_STRICT_PORT, which keeps InspIRCd's stock flood limits (1 command a
# second after a burst of 10) but without fake lag, so that a client that floods is thrown
# off ("Excess Flood") instead of slowed down. IRC_TLS_PORT is IRC_PORT over TLS with a
# self-signed certificate (IRC_TLS_CERT), which asks for client certificates.
#
# Accounts jarvis, alice and bob are written straight into Anope's flat-file database with
# plain passwords; jarvis's also accepts the client certificate IRC_JARVIS_CERT (with its
# key IRC_JARVIS_KEY) for SASL EXTERNAL over TLS. Emits IRC_PORT, IRC_STRICT_PORT, IRC_TLS_PORT, IRC_TLS_CERT,
# IRC_SERVER_NAME, IRC_SERVICES_NAME, IRC_JARVIS_PASSWORD, IRC_ALICE_PASSWORD,
# IRC_BOB_PASSWORD. Ready means a client can log in with SASL (the services are linked).
start() {
  need inspircd anope openssl python3
  # InspIRCd 3.15 sometimes dumps core when stopped; keep cores out of the caller's folder.
  ulimit -c 0
  cd "$DIR"
  local port strict tls link linkpw server services certfp
  port=$(port_for IRC_PORT)
  strict=$(port_for IRC_STRICT_PORT)
  tls=$(port_for IRC_TLS_PORT)
  link=$(port_for IRC_LINK_PORT)
  server=irc.jarvis.test
  services=services.jarvis.test
  linkpw=$(sed -n 's/^IRC_LINK_PASSWORD=//p' "$DIR/env" 2>/dev/null | tail -n 1 || true)
  [ -n "$linkpw" ] || linkpw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mkdir -p "$DIR/anope/conf" "$DIR/anope/db/backups" "$DIR/anope/logs" "$DIR/inspircd"

  if [ ! -f "$DIR/tls-key.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
      -keyout "$DIR/tls-key.pem" -out "$DIR/tls-cert.pem" >/dev/null 2>&1
  fi

  # jarvis's client certificate, whose fingerprint logs it in with SASL EXTERNAL.
  if [ ! -f "$DIR/jarvis-key.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=jarvis" \
      -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=clientAuth" \
      -keyout "$DIR/jarvis-key.pem" -out "$DIR/jarvis-cert.pem" >/dev/null 2>&1
  fi
  certfp=$(openssl x509 -in "$DIR/jarvis-cert.pem" -noout -fingerprint -sha256 \
    | sed 's/.*=//; s/://g' | tr '[:upper:]' '[:lower:]')

  write_inspircd_conf
  write_anope_conf
  [ -f "$DIR/anope/db/anope.db" ] || write_accounts

  local run_as=()
  if is_root; then
    chown -R irc:irc "$DIR/anope"
    run_as=(setpriv --reuid=irc --regid=irc --clear-groups)
  fi
  local root_flag=()
  is_root && root_flag=(--runasroot)
  alive inspircd || spawn inspircd "$(command -v inspircd)" --config="$DIR/inspircd/inspircd.conf" --nofork "${root_flag[@]}"
  wait_port "$port"
  wait_port "$link"
  alive anope || spawn anope "${run_as[@]}" "$(command -v anope)" --nofork --confdir="$DIR/anope/conf" \
    --dbdir="$DIR/anope/db" --logdir="$DIR/anope/logs" --modulesdir=/usr/lib/anope
  # Ready when services answer a SASL login, which needs the link to be up and burst.
  wait_for 30 sasl_login "$port" jarvis "$(password_of jarvis)"
  emit IRC_PORT "$port"
  emit IRC_STRICT_PORT "$strict"
  emit IRC_TLS_PORT "$tls"
  emit IRC_LINK_PORT "$link"
  emit IRC_LINK_PASSWORD "$linkpw"
  emit IRC_TLS_CERT "$DIR/tls-cert.pem"
  emit IRC_JARVIS_CERT "$DIR/jarvis-cert.pem"
  emit IRC_JARVIS_KEY "$DIR/jarvis-key.pem"
  emit IRC_SERVER_NAME "$server"
  emit IRC_SERVICES_NAME "$services"
  emit IRC_JARVIS_PASSWORD "$(password_of jarvis)"
  emit IRC_ALICE_PASSWORD "$(password_of alice)"
  emit IRC_BOB_PASSWORD "$(password_of bob)"
}

# True when NAME (a pid file in DIR) is still running: `stop DIR inspircd` leaves the
# services running, and they link again by themselves.
alive() {
  local pid
  pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# The account's password: kept in DIR/env across restarts, made up the first time.
password_of() {
  local key old
  key="IRC_$(echo "$1" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  old=$(sed -n "s/^$key=//p" "$DIR/env" 2>/dev/null | tail -n 1)
  if [ -z "$old" ]; then
    old="$1-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    emit "$key" "$old"
  fi
  echo "$old"
}

write_inspircd_conf() {
  cat > "$DIR/inspircd/inspircd.conf" <<CONF
<config format="xml">
<server name="$server" description="jarvis test server" id="1JT" network="JarvisTest">
<admin name="test" nick="test" email="test@localhost">
<path configdir="$DIR/inspircd" datadir="$DIR/inspircd" logdir="$DIR/inspircd">
<pid file="$DIR/inspircd/inspircd.real.pid">
<bind address="127.0.0.1" port="$port" type="clients">
<bind address="127.0.0.1" port="$strict" type="clients">
<bind address="127.0.0.1" port="$tls" type="clients" sslprofile="test">
<bind address="127.0.0.1" port="$link" type="servers">
<module name="ssl_gnutls">
<sslprofile name="test" provider="gnutls" certfile="$DIR/tls-cert.pem" keyfile="$DIR/tls-key.pem" dhfile="" hash="sha256" requestclientcert="yes">
<module name="sslinfo">
<connect name="strict" allow="*" port="$strict" maxchans="50" timeout="30" pingfreq="120" hardsendq="1048576" softsendq="65536" recvq="8192" threshold="10" commandrate="1000" fakelag="no" localmax="1000" globalmax="1000" useident="no" resolvehostnames="no" limit="5000" modes="+x">
<connect name="main" allow="*" maxchans="50" timeout="30" pingfreq="120" hardsendq="4194304" softsendq="1048576" recvq="1048576" threshold="100000" commandrate="1000000" fakelag="no" localmax="1000" globalmax="1000" useident="no" resolvehostnames="no" limit="5000">
<options prefixquit="Quit: " casemapping="ascii" defaultmodes="nt" allowzerolimit="no" exemptchanops="" hostintopic="yes" pingwarning="15" splitwhois="no">
<security announceinvites="dynamic" hideserver="" hidebans="no" hidesplits="no" maxtargets="20" userstats="Pu" customversion="" flatlinks="no" hideulines="no" hideulinekills="no" genericoper="no" restrictbannedusers="yes" runtimeuser="" runtimegroup="">
<performance netbuffersize="10240" somaxconn="128" softlimit="12800" clonesonconnect="no" timeskipwarn="2s" quietbursts="yes">
<limits maxnick="30" maxchan="64" maxmodes="20" maxident="10" maxhost="64" maxquit="255" maxtopic="307" maxkick="255" maxreal="128" maxaway="200">
<dns timeout="1">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="$DIR/inspircd.log">
<module name="spanningtree">
<link name="$services" ipaddr="127.0.0.1" port="$link" allowmask="127.0.0.0/8" timeout="30" sendpass="$linkpw" recvpass="$linkpw">
<uline server="$services" silent="yes">
<module name="services_account">
<module name="sasl">
<sasl target="$services" requiressl="no">
<module name="cap">
<module name="ircv3">
<ircv3 accountnotify="yes" awaynotify="yes" extendedjoin="yes">
<module name="ircv3_accounttag">
<module name="ircv3_capnotify">
<module name="ircv3_ctctags">
<module name="ircv3_echomessage">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
<module name="cloaking">
<cloak mode="half" key="jarvis-test-cloak-key-0123456789" prefix="net-">
<module name="hidechans">
CONF
}

write_anope_conf() {
  cat > "$DIR/anope/conf/services.conf" <<CONF
define { name = "services.host"; value = "$services"; }
uplink { host = "127.0.0.1"; ipv6 = no; ssl = no; port = $link; password = "$linkpw"; }
serverinfo {
  name = "$services"; description = "Services"; id = "0JT"
  pid = "$DIR/anope/anope.real.pid"; motd = "$DIR/anope/conf/services.motd"
}
module { name = "inspircd3"; use_server_side_mlock = yes; use_server_side_topiclock = yes; }
networkinfo {
  networkname = "JarvisTest"; nicklen = 30; userlen = 10; hostlen = 64; chanlen = 32
  modelistsize = 100; vhost_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-"
  allow_undotted_vhosts = false; disallow_start_or_end = ".-"
}
options {
  casemap = "ascii"; strictpasswords = no; badpasslimit = 1000; badpasstimeout = 1h
  updatetimeout = 5s; expiretimeout = 30m; readtimeout = 5s; warningtimeout = 4h
  timeoutcheck = 1s; retrywait = 1s; hideprivilegedcommands = yes; hideregisteredcommands = yes
}
mail { usemail = no; }
log { target = "services.log"; admin = "*"; servers = "*"; other = "*"; rawio = no; debug = no; }
module { name = "db_flatfile"; database = "anope.db"; keepbackups = 0; fork = no; }
module { name = "enc_none"; }
module { name = "enc_sha256"; }
service { nick = "NickServ"; user = "services"; host = "services.host"; gecos = "Nickname Services"; }
module {
  name = "nickserv"; client = "NickServ"; forceemail = no; defaults = "ns_secure hide_email"
  regdelay = 0s; expire = 0; modeonid = yes; killquick = 20s; kill = 60s
  enforceruser = "enforcer"; enforcerhost = "services.host"; releasetimeout = 1m
  guestnickprefix = "Guest"; nonicknameownership = yes; passlen = 64
}
command { service = "NickServ"; name = "HELP"; command = "generic/help"; }
module { name = "ns_identify"; maxlogins = 100; }
command { service = "NickServ"; name = "IDENTIFY"; command = "nickserv/identify"; }
module { name = "ns_register"; registration = "none"; }
command { service = "NickServ"; name = "REGISTER"; command = "nickserv/register"; }
module { name = "ns_logout"; }
command { service = "NickServ"; name = "LOGOUT"; command = "nickserv/logout"; }
module { name = "ns_status"; }
command { service = "NickServ"; name = "STATUS"; command = "nickserv/status"; }
module { name = "ns_info"; }
command { service = "NickServ"; name = "INFO"; command = "nickserv/info"; }
module { name = "ns_cert"; max = 5; }
command { service = "NickServ"; name = "CERT"; command = "nickserv/cert"; }
module { name = "m_sasl"; }
CONF
  echo "test services" > "$DIR/anope/conf/services.motd"
}

# Accounts with plain passwords (enc_none's "plain:" + base64), saving NickServ REGISTER.
write_accounts() {
  local now db="$DIR/anope/db/anope.db" who pw
  now=$(date +%s)
  : > "$db"
  for who in jarvis alice bob; do
    pw=$(printf '%s' "$(password_of "$who")" | base64 -w0)
    cat >> "$db" <<DB
OBJECT NickCore
DATA display $who
DATA pass plain:$pw
DATA email $who@localhost
DATA language
DATA access
DATA memomax 20
DATA HIDE_EMAIL 1
$( [ "$who" = jarvis ] && echo "DATA cert $certfp" )
END
OBJECT NickAlias
DATA nick $who
DATA last_quit
DATA last_realname $who
DATA last_usermask $who@localhost
DATA last_realhost $who@localhost
DATA time_registered $now
DATA last_seen $now
DATA nc $who
END
DB
  done
}

# Logs in with SASL PLAIN on 127.0.0.1:PORT; succeeds on 903 (what a client needs).
sasl_login() {
  python3 - "$@" <<'PY'
import base64, socket, sys
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=5)
nick = "probe%d" % (port % 9973)
s.sendall(b"CAP LS 302\r\nNICK %s\r\nUSER probe 0 * :probe\r\n" % nick.encode())
buf = b""
token = base64.b64encode(b"%s\0%s\0%s" % (user.encode(), user.encode(), pw.encode()))
while True:
    data = s.recv(4096)
    if not data:
        sys.exit(1)
    buf += data
    while b"\r\n" in buf:
        line, buf = buf.split(b"\r\n", 1)
        words = line.split(b" ")
        if line.startswith(b"PING"):
            s.sendall(b"PONG" + line[4:] + b"\r\n")
        elif len(words) > 3 and words[1] == b"CAP" and words[3] == b"LS":
            if b"sasl" not in line:
                sys.exit(1)
            s.sendall(b"CAP REQ :sasl\r\n")
        elif len(words) > 3 and words[1] == b"CAP" and words[3] == b"ACK":
            s.sendall(b"AUTHENTICATE PLAIN\r\n")
        elif line.startswith(b"AUTHENTICATE") and line.endswith(b"+"):
            s.sendall(b"AUTHENTICATE " + token + b"\r\n")
        elif len(words) > 1 and words[1] == b"903":
            s.sendall(b"QUIT\r\n")
            sys.exit(0)
        elif len(words) > 1 and words[1] in (b"902", b"904", b"905", b"906", b"908", b"410"):
            sys.exit(1)
PY
}
