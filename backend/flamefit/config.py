"""Model paths and cache location, configured in one place.

Precedence, highest first: command-line flags, environment variables
(FLAMEFIT_FLAME_MODEL, ...), the settings file, defaults. The settings file is TOML
at $FLAMEFIT_CONFIG, else $XDG_CONFIG_HOME/flamefit/settings.toml
(~/.config/flamefit/settings.toml), for example:

    flame_model = "/data/flame/flame2023_Open.pkl"
    uv_template = "/data/flame/head_template_mesh.obj"
    texture_space = "/data/flame/FLAME_texture.npz"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FlameFitError

PATH_KEYS = ("flame_model", "uv_template", "texture_space", "landmark_embedding")
ENV_PREFIX = "FLAMEFIT_"
FLAGS = {"flame_model": "--model"}  # command-line flag of a key, where it is not --key-name

FLAME_DOWNLOAD_HINT = (
    "FLAME files are free after registration at https://flame.is.tue.mpg.de "
    "(FLAME 2023 Open is CC-BY-4.0); without one FlameFit uses its open head"
)


@dataclass
class Settings:
    flame_model: Path | None = None
    uv_template: Path | None = None
    texture_space: Path | None = None
    landmark_embedding: Path | None = None
    cache_dir: Path = field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "flamefit")
    settings_file: Path | None = None
    sources: dict[str, str] = field(default_factory=dict)  # key -> where its value came from

    def describe(self) -> dict:
        return {key: {"value": str(getattr(self, key)) if getattr(self, key) else None,
                      "from": self.sources.get(key, "default")}
                for key in (*PATH_KEYS, "cache_dir")}


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback)


def settings_file_path(env=os.environ) -> Path:
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"])
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "flamefit" / "settings.toml"


def _read_settings_file(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlameFitError(f"{path}: cannot read settings file ({exc.strerror})") from None
    try:
        # utf-8-sig: Windows editors often start UTF-8 files with a byte-order mark
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise FlameFitError(f"{path}: settings file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                            f"{exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise FlameFitError(f"{path}: settings file is not valid TOML ({exc})") from None
    unknown = sorted(set(data) - set(PATH_KEYS) - {"cache_dir"})
    if unknown:
        raise FlameFitError(f"{path}: unknown settings {unknown}; known: {[*PATH_KEYS, 'cache_dir']}")
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            raise FlameFitError(f"{path}: {key} must be a path in quotes, e.g. {key} = \"/data/file\" "
                                f"(found {type(value).__name__} {value!r:.40})")
    return data


def load_settings(overrides: dict | None = None, env=os.environ) -> Settings:
    """Merge flags (`overrides`, None values ignored), environment and settings file."""
    settings = Settings()
    path = settings_file_path(env)
    if path.exists() or env.get(ENV_PREFIX + "CONFIG"):
        settings.settings_file = path
        for key, value in _read_settings_file(path).items():
            setattr(settings, key, Path(value).expanduser())
            settings.sources[key] = f"settings file {path}"
    for key in (*PATH_KEYS, "cache_dir"):
        value = env.get(ENV_PREFIX + key.upper())
        if value:
            setattr(settings, key, Path(value).expanduser())
            settings.sources[key] = f"environment variable {ENV_PREFIX + key.upper()}"
    for key, value in (overrides or {}).items():
        if value is not None:
            setattr(settings, key, Path(value).expanduser())
            settings.sources[key] = "command-line flag " + FLAGS.get(key, "--" + key.replace("_", "-"))
    for key in PATH_KEYS:
        value = getattr(settings, key)
        if value is not None and not value.exists():
            raise FlameFitError(
                f"{value}: {key.replace('_', ' ')} file not found (set by {settings.sources[key]}). "
                + (FLAME_DOWNLOAD_HINT if key != "landmark_embedding" else "")
            )
    return settings
