"""schema.json is the one description of a bundle: INTERFACE.md's tables, the writer's
file names, the stage names and the CLI's detector choices must agree with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flamefit.bundle.schema import SCHEMA, SCHEMA_PATH, arrays_for, file_names, files_for

REPO = Path(__file__).resolve().parents[1]
INTERFACE = (REPO / "INTERFACE.md").read_text(encoding="utf-8")


def _section(title_start: str) -> str:
    start = INTERFACE.index(f"## {title_start}")
    end = INTERFACE.find("\n## ", start + 3)
    return INTERFACE[start:end if end > 0 else None]


def _table_after(heading_prefix: str) -> list[list[str]]:
    """Rows (cells stripped) of the first markdown table after the line starting with heading_prefix."""
    text = INTERFACE[INTERFACE.index(heading_prefix):]
    rows = []
    for line in text.splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # without header and rule


def _shape(cell: str) -> list:
    parts = [p.strip() for p in cell.strip("()").split(",") if p.strip()]
    return [int(p) if p.isdigit() else p for p in parts]


def test_schema_file_is_plain_json_with_the_contract_shape():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["schema_version"] == 3 and schema["readable_versions"] == [1, 2, 3]
    assert {"files", "result_keys", "result_keys_3", "view_keys", "stages", "detectors", "photo_suffixes"} <= schema.keys()
    for key, entry in schema["files"].items():
        assert isinstance(entry["path"], str) and "/" not in entry["path"], key
        if entry.get("per_view"):  # view k >= 2's name: numbered, same format
            assert "{k}" in entry["view_path"] and entry["view_path"].format(k=2) != entry["path"], key
        for name, spec in entry.get("arrays", {}).items():
            assert set(spec) <= {"dtype", "shape", "since", "per_view", "optional"} and isinstance(spec["shape"], list), name
    assert all(s.startswith(".") and s == s.lower() for s in schema["photo_suffixes"])


def test_interface_version_matches():
    assert f"(schema version {SCHEMA['schema_version']})" in INTERFACE.splitlines()[0]
    assert f'"schema_version": {SCHEMA["schema_version"]},' in _section("3.")


def test_interface_file_table_matches_schema():
    rows = _table_after("| file (key in `files`) |")
    documented = {}
    for cell, _ in rows:
        for name, key in re.findall(r"`([^`]+)` \(`([a-z]+)`\)", cell):
            documented.setdefault(key, set()).add(name)
        for name in re.findall(r"`([^`]+)` or `([^`]+)` \(`photo`\)", cell):
            documented.setdefault("photo", set()).update(name)
    assert {k: set(v) for k, v in documented.items()} == {k: set(file_names(k)) for k in SCHEMA["files"]}


@pytest.mark.parametrize("key,heading", [("mesh", "`mesh.npz` (V"), ("params", "`params.npz` (S")])
def test_interface_array_tables_match_schema(key, heading):
    rows = _table_after(heading)
    documented = {row[0].strip("`"): {"shape": _shape(row[1]), "dtype": row[2], "since": int(row[3])} for row in rows}
    spec_of = lambda arrays: {name: {"shape": spec["shape"], "dtype": spec["dtype"], "since": spec.get("since", 1)}
                              for name, spec in arrays.items()}
    # every array, required or optional (which bundles from earlier FlameFits lack), is
    # documented exactly as the schema has it
    assert documented == spec_of(arrays_for(key, SCHEMA["schema_version"], optional=True))


def test_interface_result_example_has_the_schema_keys():
    example = _section("3.").split("```json", 1)[1].split("```", 1)[0]
    top_level = re.findall(r'^  "([a-z_0-9]+)":', example, flags=re.M)
    assert top_level == list(SCHEMA["result_keys_3"])
    files = json.loads(re.search(r'"files": (\{.*?\})', example, flags=re.S).group(1))
    assert set(files) == set(files_for(SCHEMA["schema_version"]))
    assert all(files[k] in file_names(k) for k in files)
    for key, subkeys in SCHEMA["result_subkeys_3"].items():
        block = re.search(rf'^  "{key}": (.*?)(?=^  "|\Z)', example, flags=re.S | re.M).group(1)
        assert all(f'"{s}"' in block for s in subkeys), key


def test_stages_and_detectors_match_the_code():
    from flamefit.cli import build_parser
    from flamefit.fitting import FitOptions, planned_stages

    assert planned_stages(FitOptions()) == SCHEMA["stages"]  # every stage, in the pipeline's order
    stage_line = re.search(r"Stages in order: (.*?); `index`", _section("2."), flags=re.S).group(1)
    assert re.findall(r"`([a-z]+)`", stage_line) == SCHEMA["stages"]
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    choices = next(a.choices for a in fit._actions if a.dest == "detector")
    assert sorted(choices) == sorted(SCHEMA["detectors"])


def test_writer_uses_the_schema_names():
    from flamefit.bundle.writer import FILES, SCHEMA_VERSION

    assert SCHEMA_VERSION == SCHEMA["schema_version"]
    assert FILES == {k: e["path"] for k, e in files_for(SCHEMA_VERSION).items() if k != "photo"}
