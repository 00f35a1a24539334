"""`flamefit models` and `flamefit model-info FILE`: what is configured, and what a file holds."""

from __future__ import annotations

from ..errors import FlameFitError, ModelFileError
from .session import load_model, settings_from


def models_report(settings_values: dict) -> dict:
    settings = settings_from(settings_values)
    model = load_model(settings)
    from ..landmarks.registry import describe

    return {"settings": settings.describe(), "settings_file": str(settings.settings_file or "none"),
            "head_model": model.summary(), "provenance": model.provenance, "detectors": describe()}


def models_lines(report: dict) -> list[str]:
    lines = [f"Settings file: {report['settings_file']}"]
    lines += [f"  {key:20s} {item['value'] or '-':50s} ({item['from']})" for key, item in report["settings"].items()]
    lines.append("Head model in use:")
    lines += [f"  {key:22s} {value}" for key, value in report["head_model"].items()]
    lines.append("Face detectors (--detector):")
    lines += [f"  {d['name'] + (' (default)' if d['default'] else ''):26s} "
              + (d["summary"] if not d["missing"] else f"not installed: {d['install']}") for d in report["detectors"]]
    return lines


def model_info(path) -> dict:
    """What a model, UV, embedding or texture-space file holds; a texture space's layout is
    described here (the models layer cannot read the texture-space format)."""
    from ..models.flame import inspect_model_file

    info = inspect_model_file(path)
    if info["kind"] == "texture space" and not info["problems"]:
        from ..textures.spaces import describe_texture_space

        try:
            info["texture_space"] = describe_texture_space(path)
        except ModelFileError as exc:
            info["problems"].append(exc.problem + (f" ({exc.hint})" if exc.hint else ""))
    return info


def model_info_lines(info: dict) -> list[str]:
    lines = [f"{info['path']}: {info['kind']}"]
    for key, item in info.get("keys", {}).items():
        lines.append(f"  {key:28s} {str(tuple(item.get('shape', ()))):18s} {item.get('dtype', '')}")
    for key, value in info.items():
        if key in ("path", "kind", "keys", "problems"):
            continue
        if isinstance(value, dict):  # "model", "texture_space": one line per entry
            lines.append(f"  {key}:")
            lines += [f"    {name}: {item}" for name, item in value.items()]
        else:
            lines.append(f"  {key}: {value}")
    return lines


def model_info_problems(info: dict, path) -> None:
    if info.get("problems"):
        raise FlameFitError(f"{path}: " + "; ".join(info["problems"]))
