"""The templates and rulesets shipped with dicomflow (JSON data next to this module).

- template ``ct-body-lungs``: processor ``builtin.ct_body_lungs``; ROIs ``Body`` (EXTERNAL),
  ``Lung_L`` / ``Lung_R`` (patient left / right), or one ``Lungs`` ROI when the parameter
  ``split_lungs`` is false. ``rois`` lists every structure the processor can produce, with the
  label value an external NIfTI processor would use for it.
- ruleset ``ct-images`` → ``ct-body-lungs``: Modality equals CT AND SOPClassUID in (CT, Enhanced CT,
  Legacy Converted Enhanced CT) AND ImageType does not contain LOCALIZER AND (at least 10 instances
  OR at least 10 frames).

Also the format of a rules file (``dicomflow rules dry-run --rules FILE.json``): either a list of
rulesets, or ``{"rulesets": [...], "templates": [...]}``; templates given there are added to (and
override by name) the built-in ones.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from dicomflow.core.rules.model import Ruleset, Template
from dicomflow.errors import RuleDefinitionError

CT_BODY_LUNGS = "ct-body-lungs"


def _load(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


def builtin_templates() -> dict[str, Template]:
    return {t.name: t for t in (Template.from_dict(d) for d in _load("builtin_templates.json"))}


def default_rulesets() -> list[Ruleset]:
    return [Ruleset.from_dict(d) for d in _load("builtin_rulesets.json")]


def parse_rules_document(data: Any) -> tuple[list[Ruleset], dict[str, Template]]:
    """Rulesets and the known templates (built-ins + the document's) from a rules document."""
    templates = builtin_templates()
    if isinstance(data, list):
        rulesets_data, templates_data = data, []
    elif isinstance(data, dict) and "rulesets" in data:
        rulesets_data, templates_data = data["rulesets"], data.get("templates", [])
    else:
        raise RuleDefinitionError('a rules file holds a list of rulesets or {"rulesets": [...], "templates": [...]}')
    if not isinstance(rulesets_data, list) or not isinstance(templates_data, list):
        raise RuleDefinitionError("'rulesets' and 'templates' must be lists")
    for item in templates_data:
        template = Template.from_dict(item)
        templates[template.name] = template
    rulesets = [Ruleset.from_dict(item) for item in rulesets_data]
    names = [r.name for r in rulesets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleDefinitionError(f"ruleset names must be unique; repeated: {', '.join(duplicates)}")
    return rulesets, templates


def load_rules_file(path: str | Path) -> tuple[list[Ruleset], dict[str, Template]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleDefinitionError(f"cannot read rules file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise RuleDefinitionError(f"rules file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    try:
        return parse_rules_document(data)
    except RuleDefinitionError as exc:
        raise RuleDefinitionError(f"rules file {path}: {exc}") from None
