# moto's AWS API emulator (PyPI moto[server], installed by tests/testbed/install into
# /opt/jarvis-testbed/moto) on a loopback port, with request signing checked (TESTBED.md).
#
# moto accepts any key unless INITIAL_NO_AUTH_ACTION_COUNT is set; then it takes that many
# requests unchecked and validates every later one (SigV4 signature, access key, IAM policy)
# like AWS. The first three requests make an IAM user that may do anything, and its key; every
# request after them must be signed with that key. A wrong key or secret gets AuthFailure.
#
# Emits MOTO_PORT, MOTO_URL, MOTO_ACCESS_KEY_ID, MOTO_SECRET_ACCESS_KEY, and MOTO_PYTHON (a
# Python with boto3, which moto brings, for tests that look at moto's state by a second
# client rather than through jarvis's own). moto keeps its state
# in memory: a restart in the same DIR keeps the port but starts empty, with a new key.
start() {
  local venv=${MOTO_VENV:-/opt/jarvis-testbed/moto} server python port url answer key secret
  if [ -x "$venv/bin/moto_server" ]; then
    server="$venv/bin/moto_server"
    python="$venv/bin/python"
  else
    server=$(command -v moto_server || true)
    python=$(command -v python3 || true)
  fi
  [ -n "$server" ] || { echo "testbed: moto_server is not installed (run tests/testbed/install)" >&2; exit 3; }
  need curl
  port=$(port_for MOTO_PORT)
  url="http://127.0.0.1:$port"
  if [ -f "$DIR/moto.pid" ] && kill -0 "$(cat "$DIR/moto.pid")" 2>/dev/null; then
    echo "testbed: moto already runs in $DIR (stop it first)" >&2
    exit 1
  fi
  INITIAL_NO_AUTH_ACTION_COUNT=3 MOTO_CALL_RESET_API=false spawn moto "$server" -H 127.0.0.1 -p "$port"
  wait_port "$port" 30
  kill -0 "$(cat "$DIR/moto.pid")" 2>/dev/null || { echo "testbed: moto exited, see $DIR/moto.log" >&2; exit 1; }
  moto_iam "$url" -d Action=CreateUser -d UserName=jarvis >/dev/null
  moto_iam "$url" -d Action=PutUserPolicy -d UserName=jarvis -d PolicyName=everything \
    --data-urlencode 'PolicyDocument={"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}' >/dev/null
  answer=$(moto_iam "$url" -d Action=CreateAccessKey -d UserName=jarvis)
  key=$(printf '%s' "$answer" | sed -n 's/.*<AccessKeyId>\([^<]*\)<\/AccessKeyId>.*/\1/p')
  secret=$(printf '%s' "$answer" | sed -n 's/.*<SecretAccessKey>\([^<]*\)<\/SecretAccessKey>.*/\1/p')
  if [ -z "$key" ] || [ -z "$secret" ]; then
    echo "testbed: moto made no access key: $answer" >&2
    exit 1
  fi
  emit MOTO_PORT "$port"
  emit MOTO_URL "$url"
  emit MOTO_ACCESS_KEY_ID "$key"
  emit MOTO_SECRET_ACCESS_KEY "$secret"
  emit MOTO_PYTHON "$python"
}

# One IAM request during moto's unchecked start (the signature is not looked at yet; the
# Authorization header only tells moto which service is meant).
moto_iam() {
  local url=$1; shift
  curl -sS --fail-with-body --max-time 20 "$url/" \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIDTESTBED/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0' \
    -d Version=2010-05-08 "$@"
}
