# OpenSSH sshd on a loopback port, logging in the current user by key (TESTBED.md).
# Emits SSHD_PORT, SSHD_USER, SSHD_KEY (the client's private key file), SSHD_HOST_KEYS.
start() {
  need sshd ssh-keygen
  local port user
  port=$(port_for SSHD_PORT)
  user=$(id -un)
  is_root && mkdir -p /run/sshd
  [ -f "$DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh_host_ed25519_key"
  [ -f "$DIR/ssh_host_rsa_key" ] || ssh-keygen -q -t rsa -b 2048 -N '' -f "$DIR/ssh_host_rsa_key"
  [ -f "$DIR/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/client_key"
  cp "$DIR/client_key.pub" "$DIR/authorized_keys"
  cat > "$DIR/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $DIR/ssh_host_ed25519_key
HostKey $DIR/ssh_host_rsa_key
PidFile $DIR/sshd.real.pid
AuthorizedKeysFile $DIR/authorized_keys
StrictModes no
UsePAM no
AllowUsers $user
PasswordAuthentication no
PermitRootLogin prohibit-password
CONF
  spawn sshd "$(command -v sshd)" -D -e -f "$DIR/sshd_config"
  wait_port "$port"
  emit SSHD_PORT "$port"
  emit SSHD_USER "$user"
  emit SSHD_KEY "$DIR/client_key"
  emit SSHD_HOST_KEYS "$DIR/ssh_host_ed25519_key.pub,$DIR/ssh_host_rsa_key.pub"
}
