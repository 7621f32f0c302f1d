# Sourced by the long scripts: stop before hours of work when an optional extra is missing.
#
# require_modules PYTHON EXTRA MODULE...: exit 2 with the install command unless PYTHON imports
# every MODULE (the extra `EXTRA` of pyproject.toml provides them).
require_modules() {
  local python=$1 extra=$2 module
  shift 2
  for module in "$@"; do
    if ! "$python" -c "import $module" 2> /dev/null; then
      echo "needs the Python module '$module': $python -m pip install -e '.[$extra]'" >&2
      exit 2
    fi
  done
}
