#!/usr/bin/env bash
# Build the py-flat-load detector into a WebAssembly component.
#
# Usage: plugins/python-flat-load/build.sh OUTPUT.wasm
#
# Works from any directory. The first run creates a Python virtual environment in
# target/componentize-py-venv of the repository and installs componentize-py from PyPI into it.
# Needs python3 (with the venv module) on PATH, or the interpreter named by $PYTHON.
set -euo pipefail

# componentize-py 0.25.1 embeds CPython 3.14. For a world without async functions its
# components import WASI 0.2 interfaces (wasi:*@0.2.9), which wasmtime-wasi's p2 linker provides.
COMPONENTIZE_PY_VERSION=0.25.1

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTPUT.wasm" >&2
    exit 2
fi
output=$1

plugin_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$plugin_dir/../.." && pwd)
venv="$repo_root/target/componentize-py-venv"
componentize_py="$venv/bin/componentize-py"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating the virtual environment $venv" >&2
    "${PYTHON:-python3}" -m venv "$venv"
fi

# A failing version check also covers a venv moved with its checkout: its scripts keep the
# old interpreter path, so the package is reinstalled to rewrite them.
installed_version=$("$componentize_py" --version 2>/dev/null || true)
if [[ "$installed_version" != "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
    echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
        --no-deps "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# No separate bindings step is needed: `componentize` generates the `wit_world` package from
# the WIT on every build. `componentize-py bindings DIR` writes stub copies for editors only.
mkdir -p "$(dirname "$output")"

# The build runs the guest's CPython once with the plugin folder mounted writable, and that
# interpreter writes bytecode into it. The bytecode is not needed after the build.
trap 'rm -rf -- "$plugin_dir/__pycache__"' EXIT

# componentize-py adds the site-packages of $VIRTUAL_ENV, or of the python3 on PATH when it is
# unset, to the guest's module path. Setting it to the build venv keeps the caller's packages
# out of the component.
VIRTUAL_ENV="$venv" "$componentize_py" \
    -d "$repo_root/plugin-sdk/wit" \
    -w plugin \
    componentize app \
    -p "$plugin_dir" \
    -o "$output"
