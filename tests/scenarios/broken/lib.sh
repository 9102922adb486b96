# Shared by every broken plugin of the kit: the unbroken plugin ($REAL) with hooks a defect
# overrides. Sourced with the plugin's stdin still unread; `run` ends the call.
#   before        runs first (may answer and exit: `fail CODE MSG`, or print and exit 0)
#   edit          a jq filter applied to a successful ADD's result
#   after_add     runs after a successful ADD ($result holds it)
conf=$(cat)
ver=$(printf '%s' "$conf" | jq -r '.cniVersion // "1.0.0"')
edit='.'
real() { printf '%s' "${1:-$conf}" | "$REAL"; }
in_pod() { nsenter --net="$CNI_NETNS" "$@"; }
fail() { printf '{"cniVersion":"%s","code":%s,"msg":"%s"}\n' "$ver" "$1" "$2"; exit 1; }
pod_ip() { printf '%s' "$result" | jq -r '.ips[0].address | sub("/.*"; "")'; }
host_veth() { printf '%s' "$result" | jq -r '[.interfaces[] | select(.sandbox == null)][0].name'; }
has_ifname() { [ -n "${CNI_NETNS:-}" ] && in_pod ip link show "$CNI_IFNAME" >/dev/null 2>&1; }
before() { :; }
after_add() { :; }
run() {
  before
  result=$(real); rc=$?
  if [ "$CNI_COMMAND" = ADD ] && [ "$rc" -eq 0 ]; then
    after_add >&2
    printf '%s' "$result" | jq -c "$edit"
  else
    [ -n "$result" ] && printf '%s\n' "$result"
  fi
  exit "$rc"
}
