# Stage 1 of the remote bootstrap (see bootstrap.rs for the protocol). Run by
# stage 0 through `eval`; @DIRS@ is replaced by the quoted cache directories.
# Every line for the controller starts with MITOGEN-RS-; anything else it
# reads is noise (banners, a chatty login shell) and is skipped.
u=$(id -u 2>/dev/null || echo unknown)
dec=
for z in zstd xz gzip; do command -v $z >/dev/null 2>&1 && dec="$dec${dec:+,}$z"; done
set -- $(uname -sm)
printf 'MITOGEN-RS-UNAME %s %s %s\n' "$1" "$2" "${dec:--}"
read -r verb hash size || exit 1
case "$hash" in '' | *[!0-9a-f]*) verb="bad:$verb" ;; esac
case "$size" in '' | *[!0-9]*) verb="bad:$verb" ;; esac
[ "$verb" = AGENT ] || { echo "MITOGEN-RS-ERROR expected 'AGENT <sha256> <size>', got: $verb $hash $size"; exit 1; }
# Every check is the agent's own: it hashes its image (/proc/self/exe) and
# prints the hash. A file that is not that agent, is corrupt, or cannot be
# executed here (noexec, wrong format) fails, and the note says why; one
# that does not exit is stopped after 10 s where `timeout` exists.
tmo=; command -v timeout >/dev/null 2>&1 && tmo="timeout 10"
check() {
  m=$($tmo "$1" --mitogen-check </dev/null 2>&1)
  r=$?
  [ "$r:$m" = "0:MITOGEN-RS-IMAGE $hash" ] && return 0
  m=$(printf '%s' "$m" | tr -c '[:print:]' ' ' | cut -c1-200)
  echo "MITOGEN-RS-NOTE $1 failed its check (exit status $r: ${m:-it printed nothing})"
  return 1
}
# Fast path: a cached agent that passes its check runs at once.
for d in @DIRS@; do
  f="$d/agent-$hash"
  [ -e "$f" ] || continue
  if [ -O "$d" ] && [ -O "$f" ] && check "$f"; then
    echo "MITOGEN-RS-HIT $f"; exec "$f" --mitogen-agent
  fi
  # A miss: replaced below (a running agent keeps its own copy of the file).
  [ -O "$f" ] && rm -f "$f"
done
# Slow path: the first directory that is usable gets the upload.
un=$(id -un 2>/dev/null || echo "uid $u")
for d in @DIRS@; do
  if ! mkdir -p "$d" 2>/dev/null; then echo "MITOGEN-RS-NOTE $d: cannot be created by $un"; continue; fi
  if [ ! -O "$d" ]; then
    o=$(ls -ld "$d" 2>/dev/null | awk '{print $3}')
    echo "MITOGEN-RS-NOTE $d: owned by ${o:-another user}, not by $un"; continue
  fi
  if [ ! -w "$d" ]; then echo "MITOGEN-RS-NOTE $d: not writable by $un"; continue; fi
  chmod 700 "$d" 2>/dev/null
  p="$d/.probe.$$"
  printf '#!/bin/sh\nexit 0\n' > "$p" 2>/dev/null && chmod 700 "$p" && "$p" 2>/dev/null
  r=$?; rm -f "$p"
  if [ "$r" != 0 ]; then echo "MITOGEN-RS-NOTE $d: does not allow executing files (mounted noexec?)"; continue; fi
  f="$d/agent-$hash"
  # Each new agent version adds a file: on a miss, drop those a week old.
  find "$d" -maxdepth 1 -name 'agent-*' -mtime +7 -exec rm -f {} + 2>/dev/null
  echo "MITOGEN-RS-SEND $f"
  read -r enc wire || exit 1
  case "$wire" in '' | *[!0-9]*) echo "MITOGEN-RS-ERROR expected '<encoding> <bytes>', got: $enc $wire"; exit 1 ;; esac
  t="$f.$$.tmp"
  case "$enc" in
    zstd) head -c "$wire" | zstd -dqc > "$t" ;;
    xz) head -c "$wire" | xz -dc > "$t" ;;
    gzip) head -c "$wire" | gzip -dc > "$t" ;;
    raw) head -c "$wire" > "$t" ;;
    *) echo "MITOGEN-RS-ERROR unknown encoding '$enc'"; exit 1 ;;
  esac
  n=$(wc -c < "$t" 2>/dev/null | tr -d ' ')
  if [ "$n" = "$size" ] && chmod 700 "$t" && check "$t" && mv -f "$t" "$f"; then
    echo "MITOGEN-RS-STORED $f"; exec "$f" --mitogen-agent
  fi
  rm -f "$t"
  echo "MITOGEN-RS-ERROR the agent uploaded to $t ($enc, ${n:-no} of $size bytes after decoding) failed its check"
  exit 1
done
echo "MITOGEN-RS-ERROR no cache directory is usable by $un (uid $u)"
exit 1
