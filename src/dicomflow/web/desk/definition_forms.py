"""Templates and rulesets as forms: the POSTed fields of the pages ↔ the core's definition dicts.

People set processor, parameters, ROI names and colours, destinations, required series and the
blocking findings in ordinary fields; the rule builder posts its AND/OR tree as one JSON field
(built by ``desk.js`` from the builder's inputs). The core validates whatever is built.
"""

from __future__ import annotations

import json

from dicomflow.errors import InputError

from dicomflow.core.quality.nomenclature import INTERPRETED_TYPES

ROI_TYPES = list(INTERPRETED_TYPES)


def _scalar(text: str):
    """A typed parameter value: JSON when it parses (numbers, true/false, lists), else the text."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def _rows(post, prefix: str, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows posted as ``<prefix>-<field>`` lists (one value per row), empty rows dropped."""
    columns = [post.getlist(f"{prefix}-{f}") for f in fields]
    rows = [dict(zip(fields, (c[i] if i < len(c) else "" for c in columns))) for i in range(max(map(len, columns)))]
    return [r for r in rows if any(v.strip() for v in r.values())]


def _hex_to_rgb(value: str) -> list[int]:
    value = value.strip().lstrip("#")
    try:
        if len(value) != 6:
            raise ValueError(value)
        return [int(value[i:i + 2], 16) for i in (0, 2, 4)]
    except ValueError:
        raise InputError(f"colour '{value[:10]}' is not #rrggbb") from None


def rgb_to_hex(rgb) -> str:
    try:
        return "#%02x%02x%02x" % tuple(int(v) for v in rgb)
    except (TypeError, ValueError):
        return "#ff0000"


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.replace("\n", ",").split(",") if v.strip()]


def template_from_post(post) -> tuple[str, dict]:
    """(name, definition) from the template form."""
    parameters = {r["name"].strip(): _scalar(r["value"]) for r in _rows(post, "param", ("name", "value"))
                  if r["name"].strip()}
    if post.get("quality_control"):
        parameters["quality_control"] = True
    else:
        parameters.pop("quality_control", None)
    rois = []
    for i, row in enumerate(_rows(post, "roi", ("key", "name", "color", "type", "label", "observation_label")), start=1):
        if not row["name"].strip() and not row["key"].strip():
            continue
        label = row["label"].strip()
        roi = {"key": row["key"].strip() or row["name"].strip().lower(), "name": row["name"].strip(),
               "color": _hex_to_rgb(row["color"] or "#ff0000"), "type": row["type"] or "ORGAN",
               "label": int(label) if label.isdigit() else i}
        if row["observation_label"].strip():
            roi["observation_label"] = row["observation_label"].strip()
        rois.append(roi)
    try:
        derived = json.loads(post.get("derived", "").strip() or "[]")
    except ValueError:
        raise InputError("derived structures: not valid JSON (a list of {name, color, type, expression})") from None
    destinations = []
    for row in _rows(post, "dest", ("type", "target")):
        target = row["target"].strip()
        if not target:
            continue
        destinations.append({"type": "folder", "path": target} if row["type"] != "dicom"
                            else {"type": "dicom", "node": target})
    requires: dict = {}
    if modalities := _split(post.get("modalities", "")):
        requires["modalities"] = [m.upper() for m in modalities]
    if sop_classes := _split(post.get("sop_class_uids", "")):
        requires["sop_class_uids"] = sop_classes
    if (min_images := post.get("min_images", "").strip()):
        if not min_images.isdigit():
            raise InputError("the minimum number of images must be a whole number")
        requires["min_images"] = int(min_images)
    definition = {"description": post.get("description", "").strip(), "processor": post.get("processor", "").strip(),
                  "parameters": parameters, "requires": requires, "rois": rois, "destinations": destinations,
                  "blocking_findings": post.getlist("blocking_findings"), "derived": derived,
                  "nomenclature": "local" if post.get("nomenclature") == "local" else "TG-263"}
    return post.get("name", "").strip(), definition


def template_initial(name: str, definition: dict) -> dict:
    """What the template form shows for a stored definition."""
    parameters = dict(definition.get("parameters") or {})
    qc = bool(parameters.pop("quality_control", False))
    requires = definition.get("requires") or {}
    return {
        "name": name, "description": definition.get("description", ""), "processor": definition.get("processor", ""),
        "parameters": [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in parameters.items()],
        "quality_control": qc,
        "rois": [{**r, "hex": rgb_to_hex(r.get("color"))} for r in definition.get("rois") or []],
        "destinations": [{"type": d.get("type", "folder"), "target": d.get("path") or d.get("node") or ""}
                         for d in definition.get("destinations") or []],
        "modalities": ", ".join(requires.get("modalities") or []),
        "sop_class_uids": ", ".join(requires.get("sop_class_uids") or []),
        "min_images": requires.get("min_images", ""),
        "blocking_findings": list(definition.get("blocking_findings") or []),
        "derived": json.dumps(definition.get("derived") or [], indent=1) if definition.get("derived") else "",
        "nomenclature": definition.get("nomenclature", "TG-263"),
    }


def automatic_from_post(post) -> tuple[bool, str]:
    """(auto_process, auto_project) from the template form's "Automatic processing" fields."""
    return bool(post.get("auto_process")), post.get("auto_project", "").strip()


def ruleset_from_post(post) -> tuple[str, dict, bool, int]:
    """(name, definition, enabled, order) from the ruleset form; ``match`` is the builder's JSON."""
    try:
        match = json.loads(post.get("match") or "null")
    except ValueError:
        raise InputError("the rule builder sent an unreadable rule tree; reload the page") from None
    if not match:
        raise InputError("add at least one condition")
    order = post.get("order", "0").strip() or "0"
    if not order.lstrip("-").isdigit():
        raise InputError("the order must be a whole number")
    definition = {"description": post.get("description", "").strip(), "template": post.get("template", "").strip(),
                  "match": match}
    return post.get("name", "").strip(), definition, bool(post.get("enabled")), int(order)
