# Built Go tools, cached outside the checkout (sourced by the build scripts).
#
# A tool is built once per key into
#   ${RILL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rill}/bin/<name>-<key>/
# and linked into the checkout's .rill/bin, so every clone on the machine reuses it. The
# key hashes what decides the binary (a wrapper module's go.mod and go.sum, or the pinned
# version, plus the build flags): change one and the next run builds a new entry beside
# the old one. A build goes to a temporary directory first and is renamed into place
# only when complete, so an interrupted build is never taken for a cached one.

bincache_root() {
  printf '%s/bin' "${RILL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rill}"
}

# bincache_key text...: a short hash of its arguments and of the files named by @path.
bincache_key() {
  local part
  for part in "$@"; do
    if [ "${part#@}" != "$part" ]; then cat "${part#@}"; else printf '%s\n' "$part"; fi
  done | sha256sum | cut -c1-16
}

# bincache_link name key bindir builder binary...
#   Links each binary of entry <name>-<key> into bindir, building the entry first when
#   it is missing: `builder <outdir>` must write every binary into <outdir>.
bincache_link() {
  local name=$1 key=$2 bindir=$3 builder=$4; shift 4
  local entry tmp b started
  entry="$(bincache_root)/$name-$key"
  if [ ! -f "$entry/.complete" ]; then
    tmp="$entry.partial.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    started=$(date +%s)
    "$builder" "$tmp"
    for b in "$@"; do
      [ -x "$tmp/$b" ] || { printf '[bincache] %s did not produce %s\n' "$builder" "$b" >&2; return 1; }
    done
    printf '%s built in %s s\n' "$name" "$(($(date +%s) - started))" >"$tmp/.complete"
    # Another clone may have finished the same entry meanwhile: keep whichever landed first.
    mv -T "$tmp" "$entry" 2>/dev/null || rm -rf "$tmp"
    printf '[bincache] %s: %s\n' "$name" "$(cat "$entry/.complete")" >&2
  else
    printf '[bincache] %s: cached in %s\n' "$name" "$entry" >&2
  fi
  mkdir -p "$bindir"
  for b in "$@"; do ln -sfn "$entry/$b" "$bindir/$b"; done
}
