"""Standard codes (SNOMED CT) for segmentation labels, and Slicer's terminology string for them.

Why codes: a segment called "Grey matter" is only a word; with its SNOMED CT code, 3D Slicer's
terminology browser recognises it and DICOM SEG export writes a standard segment description that
other software reads.  The codes are the ones 3D Slicer itself lists (so Slicer finds them in its
terminology contexts rather than showing an unknown entry):

* grey and white matter: "Segmentation category and type - 3D Slicer General Anatomy list"
  (Slicer ``Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json``):
  category *Anatomical Structure* (SCT 123037004), types *Gray Matter* (SCT 389081007, "gray matter
  structure of central nervous system") and *White Matter* (SCT 389080008);
* CSF: only the DICOM master list has the fluid itself, *Cerebrospinal Fluid* (SCT 65216001, same
  category); the General Anatomy list has the ventricular pathway (SCT 280371009) instead.

A package states its codes per label in ``model.json`` (``labels[i].snomed``, checked by
:mod:`JointSRSegLib.package_schema`); :func:`terminology_for_name` gives them for the tissue names
packages use, so a package exported before labels carried codes still gets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER = "Segmentation category and type - DICOM master list"
# What Slicer writes for "no anatomic region" (its default terminology entry ends the same way).
REGION_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}

GREY_MATTER_SNOMED = {
    "context": GENERAL_ANATOMY,
    "category": ANATOMICAL_STRUCTURE,
    "type": {"scheme": "SCT", "code": "389081007", "meaning": "Gray Matter"},
}
WHITE_MATTER_SNOMED = {
    "context": GENERAL_ANATOMY,
    "category": ANATOMICAL_STRUCTURE,
    "type": {"scheme": "SCT", "code": "389080008", "meaning": "White Matter"},
}
CSF_SNOMED = {
    "context": DICOM_MASTER,
    "category": ANATOMICAL_STRUCTURE,
    "type": {"scheme": "SCT", "code": "65216001", "meaning": "Cerebrospinal Fluid"},
}
_BY_NAME = {
    "grey matter": GREY_MATTER_SNOMED,
    "gray matter": GREY_MATTER_SNOMED,
    "white matter": WHITE_MATTER_SNOMED,
    "csf": CSF_SNOMED,
    "cerebrospinal fluid": CSF_SNOMED,
}
# Separators of Slicer's terminology string (~, ^) and of the segment tags in a .seg.nrrd (|).
RESERVED = ("~", "^", "|")


def terminology_for_name(name: str) -> dict[str, Any] | None:
    """The codes of a tissue label by its name ("Grey matter", "white matter", "CSF"), else None."""
    found = _BY_NAME.get(" ".join(str(name).lower().split()))
    return _copy(found) if found else None


def label_terminology(label: Mapping[str, Any]) -> dict[str, Any] | None:
    """The codes of a ``model.json`` label: its own ``snomed``, else the codes of its tissue name."""
    own = label.get("snomed")
    if isinstance(own, Mapping):
        return _copy(own)
    return terminology_for_name(str(label.get("name", "")))


def with_terminology(labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``model.json`` labels with ``snomed`` added where the name is a known tissue (training export)."""
    out = []
    for label in labels:
        codes = label_terminology(label)
        out.append(dict(label, snomed=codes) if codes and "snomed" not in label else dict(label))
    return out


def code_problem(code: Any, where: str) -> str | None:
    """Why ``code`` is not a usable ``{"scheme", "code", "meaning"}`` entry (None when it is)."""
    if not isinstance(code, Mapping):
        return f"{where} must be an object with code and meaning"
    for key in ("code", "meaning"):
        value = code.get(key)
        if not isinstance(value, str) or not value.strip():
            return f"{where}.{key} must be a non-empty string"
    scheme = code.get("scheme", "SCT")
    if not isinstance(scheme, str) or not scheme.strip():
        return f"{where}.scheme must be a non-empty string (SCT for SNOMED CT)"
    for key in ("scheme", "code", "meaning"):
        if any(mark in str(code.get(key, "")) for mark in RESERVED):
            return f"{where}.{key} must not contain {' '.join(RESERVED)} (separators of Slicer's terminology)"
    return None


def snomed_problem(snomed: Any, where: str) -> str | None:
    """Why a label's ``snomed`` object is unusable: it needs a category and a type code."""
    if not isinstance(snomed, Mapping):
        return f"{where} must be an object with category and type codes"
    for key in ("category", "type"):
        problem = code_problem(snomed.get(key), f"{where}.{key}")
        if problem:
            return problem
    context = snomed.get("context", GENERAL_ANATOMY)
    if not isinstance(context, str) or any(mark in context for mark in RESERVED):
        return f"{where}.context must be a terminology context name without {' '.join(RESERVED)}"
    return None


def slicer_terminology_entry(snomed: Mapping[str, Any]) -> str:
    """Slicer's serialised terminology entry (the ``TerminologyEntry`` tag of a vtkSegment).

    Seven ``~``-separated parts -- context, category, type, type modifier, region context, region,
    region modifier -- each code ``scheme^value^meaning`` (Slicer
    ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``; its deserializer refuses any
    other count).  The layout is the same in Slicer's older sources (anatomic context/region) and
    current ones (region context/region), so it holds for the Slicer 5.10+ this module needs.
    """
    problem = snomed_problem(snomed, "snomed")
    if problem:
        raise ValueError(problem)

    def code(entry: Mapping[str, Any]) -> str:
        return f"{entry.get('scheme', 'SCT')}^{entry['code']}^{entry['meaning']}"

    context = snomed.get("context", GENERAL_ANATOMY)
    return "~".join((context, code(snomed["category"]), code(snomed["type"]), "^^", REGION_CONTEXT, "^^", "^^"))


def _copy(snomed: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in snomed.items()}


__all__ = [
    "CSF_SNOMED",
    "DICOM_MASTER",
    "GENERAL_ANATOMY",
    "GREY_MATTER_SNOMED",
    "WHITE_MATTER_SNOMED",
    "label_terminology",
    "slicer_terminology_entry",
    "snomed_problem",
    "terminology_for_name",
    "with_terminology",
]
