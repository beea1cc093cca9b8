# Sourced by the scripts that need a throwaway copy of this machine's root.
# `cow_enter "$@"` re-executes the calling script in a private mount and pid namespace;
# `cow_root` then mounts an overlay of / whose writes go to memory, sets COW to it, and
# everything vanishes with the namespace: nothing on the host changes.
cow_enter() {
  if [ -z "${PORTSENTRY_COW:-}" ]; then
    exec env PORTSENTRY_COW=1 unshare --mount --pid --fork --mount-proc --propagation private "$0" "$@"
  fi
}

cow_root() {
  local w
  w=$(mktemp -d)
  mount -t tmpfs tmpfs "$w"
  mkdir "$w"/upper "$w"/work "$w"/root
  mount -t overlay overlay -o "lowerdir=/,upperdir=$w/upper,workdir=$w/work" "$w/root"
  COW=$w/root
}

# check "what" command...: runs the command, says ok or FAILED, remembers a failure and
# counts both (checks_ok, checks_failed); CHECK_TAG, when set, prefixes each line.
fail=0 checks_ok=0 checks_failed=0
check() {
  local what=${CHECK_TAG:+[$CHECK_TAG] }$1
  shift
  if "$@"; then
    echo "ok: $what"
    checks_ok=$((checks_ok + 1))
  else
    echo "FAILED: $what" >&2
    fail=1
    checks_failed=$((checks_failed + 1))
  fi
}

# wait_for SECONDS command...: polls the command until it succeeds or time runs out.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt "$end" ] || return 1
    sleep 0.2
  done
}
