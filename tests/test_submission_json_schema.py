"""The published JSON Schema of submissions, ``leaderboards/submission.schema.json``.

Submitters check their files against it before opening a pull request, so it must be exactly what
the pydantic models in :mod:`promptgym.bench.schema` generate. When a model changes, regenerate it:

    python -c "import json; from promptgym.bench.schema import submission_json_schema as s; \\
    open('leaderboards/submission.schema.json', 'w').write(json.dumps(s(), indent=2, ensure_ascii=False) + '\\n')"

(``jsonschema`` is not a dependency, so the committed entries are checked against the schema's
key sets rather than by a JSON Schema validator.)
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from promptgym.bench.schema import (
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    Submission,
    parse_submission,
    submission_json_schema,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "leaderboards" / "submission.schema.json"
ENTRIES = sorted((ROOT / "leaderboards").glob("*/*.json"))


def _models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The model and every model nested in it (in lists, dicts, unions), by name (the keys of ``$defs``)."""
    found = {model.__name__: model}

    def walk(tp: object) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found.update(_models(tp))
        for arg in getattr(tp, "__args__", ()):
            walk(arg)

    for field in model.model_fields.values():
        walk(field.annotation)
    return found


def test_committed_schema_is_what_the_models_generate() -> None:
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    assert json.loads(text) == submission_json_schema(), "stale: regenerate it (see this module's docstring)"
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"  # pretty-printed as generated


def test_schema_key_sets_match_the_models() -> None:
    schema = submission_json_schema()
    models = _models(Submission)
    assert set(models) == {"Submission", "Agent", "ModelRef", "Prompt", "Run", "Scores", "OodAuroc",
                           "UsageReceipt", "ReceiptBody", "TestSubsample", "SearchThreads", "SearchHost"}
    assert set(schema["$defs"]) == set(models) - {"Submission"}
    for name, model in models.items():
        node = schema if name == "Submission" else schema["$defs"][name]
        assert list(node["properties"]) == list(model.model_fields), name
        assert node.get("required", []) == [k for k, f in model.model_fields.items() if f.is_required()], name
        assert node["additionalProperties"] is False, name
    assert schema["properties"]["schema_version"]["enum"] == list(SCHEMA_VERSIONS) and SCHEMA_VERSION in SCHEMA_VERSIONS
    assert "demonstrations" not in schema["$defs"]["Prompt"]["required"]
    assert "default" not in schema["$defs"]["Prompt"]["properties"]["demonstrations"]  # null is not accepted


def test_committed_entries_parse_and_have_the_schema_keys() -> None:
    schema = submission_json_schema()
    assert ENTRIES, "no committed leaderboard entries found"
    for path in ENTRIES:
        sub = parse_submission(path.read_bytes())
        _keys_in_schema(sub, schema, path)
        for run in sub["runs"]:
            run_node = schema["$defs"]["Run"]
            assert set(run_node["required"]) <= set(run) <= set(run_node["properties"]), path
            _keys_in_schema(run["prompt"], schema["$defs"]["Prompt"], path)
            _keys_in_schema(run["test"], schema["$defs"]["Scores"], path)


def _keys_in_schema(obj: dict, node: dict, path: Path) -> None:
    """Every required key, optional keys only from the schema's properties, in the schema's order."""
    order = list(node["properties"])
    assert set(node["required"]) <= set(obj) <= set(order), path
    assert list(obj) == sorted(obj, key=order.index), path


def test_schema_states_the_main_bounds() -> None:
    schema = submission_json_schema()
    props, defs = schema["properties"], schema["$defs"]
    assert props["tier"]["enum"] == ["lite", "standard"]
    assert props["runs"]["minItems"] == props["runs"]["maxItems"] == 5
    assert props["data_sha256"]["propertyNames"]["pattern"].startswith("^")
    assert props["data_sha256"]["additionalProperties"]["pattern"] == "^[0-9a-f]{64}$"
    assert props["env_kwargs"]["propertyNames"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]{0,63}$"
    assert defs["Scores"]["properties"]["ece"] | {"title": None} == {"maximum": 1.0, "minimum": 0.0, "title": None,
                                                                      "type": "number"}
    assert defs["Run"]["properties"]["curve"]["items"]["prefixItems"] == [{"minimum": 0, "type": "integer"},
                                                                         {"type": "number"}]
