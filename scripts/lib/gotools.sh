# Sourced by scripts that need Go-built tools (scripts/gen-protos, scripts/go-tools).
# go_tool BINARY PACKAGE VERSION: `go install PACKAGE@VERSION` once into a cache directory of its
# own per version, then print the binary's path. The cache ($PUSHPLAT_CACHE_DIR, default
# ~/.cache/pushplat) is outside git; later runs only check that the file is there.
GO_TOOLS_DIR="${PUSHPLAT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pushplat}/gobin"

go_tool() {
  local binary="$1" package="$2" version="$3"
  local dir="$GO_TOOLS_DIR/$binary@$version"
  if [[ ! -x "$dir/$binary" ]]; then
    echo "==> installing $binary $version into $dir" >&2
    mkdir -p "$dir.partial"
    # From a scratch directory, so no go.mod around us changes what gets built.
    (cd "$dir.partial" && GOBIN="$dir.partial" GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "$package@$version") >&2
    rm -rf "$dir" && mv "$dir.partial" "$dir"
  fi
  echo "$dir/$binary"
}
