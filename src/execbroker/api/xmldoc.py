"""The wire schema's documents as XML: a JSON-like value to elements and back.

The mapping is the plain one the schema's ``xml`` hints describe: a property is an element
of its name, a list is its element repeated, a leaf is its text (``kind`` may also be an
attribute, as the schema writes it on updates). XML does not say which elements are
lists or numbers, so a parsed document is shaped by the pydantic model it is meant for
(:func:`shape`) and pydantic's lax mode reads numbers and booleans from their text.

Parsing is as guarded as for JSON and YAML: defusedxml refuses any DTD (so no entity
can expand or reach a file), the tree may nest at most ``max_depth`` levels, and XML 1.0
itself cannot carry a NUL. Keys that are not XML names are written as ``<entry key=...>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from pydantic import BaseModel

from execbroker import kinds

ENTRY = "entry"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Characters XML 1.0 cannot hold (a task's log may have them): written as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class XmlError(ValueError):
    """The text is not XML we read (malformed, a DTD, too deep)."""


# -- out --------------------------------------------------------------------------------


def dumps(data: Any, root: str) -> bytes:
    element = ET.Element(root)
    _fill(element, data)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("\ufffd", str(value))


def _child(parent: ET.Element, key: str) -> ET.Element:
    if _NAME.match(key) and key != ENTRY:
        return ET.SubElement(parent, key)
    return ET.SubElement(parent, ENTRY, key=_text(key))


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            for one in item if isinstance(item, list) else [item]:
                if one is not None:
                    _fill(_child(element, str(key)), one)
    elif value is not None:
        element.text = _text(value)


# -- in ---------------------------------------------------------------------------------


def loads(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """The root element's content as a dict (its own name is not part of the document)."""
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True)
    except DefusedXmlException as error:
        raise XmlError(f"XML with a DTD or entities is refused ({type(error).__name__})") from None
    except ET.ParseError as error:
        raise XmlError(f"not well-formed XML: {error}") from None
    _check_depth(root, max_depth)
    value = _read(root)
    return value if isinstance(value, dict) else {}


def _check_depth(root: ET.Element, max_depth: int) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise XmlError(f"XML nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in node)


def _read(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    found: dict[str, Any] = {}
    if "kind" in element.attrib:
        found["kind"] = element.attrib["kind"]
    for child in children:
        key = child.attrib.get("key", child.tag) if child.tag == ENTRY else child.tag
        value = _read(child)
        if key in found:
            previous = found[key]
            if isinstance(previous, _Many):
                previous.append(value)
            else:
                found[key] = _Many([previous, value])
        else:
            found[key] = value
    return {key: list(value) if isinstance(value, _Many) else value for key, value in found.items()}


class _Many(list[Any]):
    """Values of a repeated element, told apart from a list value while reading."""


# -- shaping by model -------------------------------------------------------------------


def shape(value: Any, annotation: Any) -> Any:
    """``value`` with every element the model says is a list made one, however many times
    it was repeated (once, or as an empty element)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return shape(value, get_args(annotation)[0])
    if origin in (Union, UnionType):
        return _shape_union(value, [a for a in get_args(annotation) if a is not NoneType])
    if origin is list:
        items = value if isinstance(value, list) else ([] if value == "" else [value])
        (item_type,) = get_args(annotation) or (Any,)
        return [shape(item, item_type) for item in items]
    if origin is dict:
        return {} if value == "" else value  # an empty element: an empty mapping
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if value == "":
            return {}
        if not isinstance(value, dict):
            return value
        fields = annotation.model_fields
        return {
            key: shape(item, fields[key].annotation) if key in fields else item
            for key, item in value.items()
        }
    return value


def _shape_union(value: Any, members: list[Any]) -> Any:
    if not isinstance(value, dict):
        lists = [m for m in members if get_origin(m) is list]
        return shape(value, lists[0]) if lists and isinstance(value, list) else value
    models = [_model_of(m) for m in members]
    models = [m for m in models if m is not None]
    kind = value.get("kind")
    wanted = kinds.canonical(kind) if isinstance(kind, str) else None
    for model in models:
        field = model.model_fields.get("kind")
        if field is not None and field.default == wanted:
            return shape(value, model)
    return shape(value, models[-1]) if models else value


def _model_of(annotation: Any) -> type[BaseModel] | None:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
