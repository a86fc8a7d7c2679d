"""Tag schemes for sequence labeling (pure Python): checking, converting, reading spans.

Three schemes:

- ``bio`` (IOB2): ``B-X`` begins an entity of type X, ``I-X`` continues it, ``O`` is outside.
- ``bioes``: as ``bio``, plus ``E-X`` ends a multi-token entity and ``S-X`` is a
  single-token one.
- ``none``: plain tags (parts of speech, chunk or supersense tags, ...): any string is a
  tag, any tag may follow any other, and tags form no spans.

``spans`` reads entities the way CoNLL's ``conlleval`` script (and seqeval's default mode)
does, so scores computed from them match the published numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional, Sequence

SCHEMES = ("bio", "bioes", "none")
SPAN_SCHEMES = ("bio", "bioes")
OUTSIDE = "O"
_PREFIXES = {"bio": ("B", "I"), "bioes": ("B", "I", "E", "S")}


@dataclass(frozen=True)
class LabelSet:
    """A tagger's tag vocabulary or a classifier's classes (``labels.json`` in a checkpoint).

    ``labels[i]`` is the label of output ``i``. For tags, ``scheme`` is the scheme the
    model predicts and ``data_scheme`` the scheme of the training data, in which tags are
    returned; classes have no scheme (``None``).
    """

    labels: list[str]
    scheme: Optional[str] = "bio"
    data_scheme: Optional[str] = "bio"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LabelSet":
        return cls(labels=list(data["labels"]), scheme=data.get("scheme", "bio"), data_scheme=data.get("data_scheme", "bio"))


@dataclass(frozen=True)
class Targets:
    """A regression model's outputs (``labels.json``): their names, and the mean and standard
    deviation that standardized them for training (predictions are scaled back)."""

    names: list[str]
    mean: list[float]
    std: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"targets": self.names, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Targets":
        names, mean, std = list(data["targets"]), [float(x) for x in data["mean"]], [float(x) for x in data["std"]]
        if not (len(names) == len(mean) == len(std)) or not all(value > 0 for value in std):
            raise ValueError("targets, mean and std must have one positive std per target")
        return cls(names, mean, std)


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-person"`` -> ``("B", "person")``; ``"O"`` -> ``("O", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, label = tag.partition("-")
    return prefix, label


def scheme_of(tag: str) -> str:
    """The narrowest scheme ``tag`` belongs to: ``bio`` for ``O``, ``B-X``, ``I-X``;
    ``bioes`` for ``E-X``, ``S-X``; ``none`` for anything else (``NN``, ``B``, ``X-Y``)."""
    prefix, label = split_tag(tag)
    if tag == OUTSIDE or (label and prefix in _PREFIXES["bio"]):
        return "bio"
    return "bioes" if label and prefix in _PREFIXES["bioes"] else "none"


def tag_problem(previous: str, tag: str, scheme: str) -> Optional[str]:
    """Why ``tag`` cannot follow ``previous`` (``"O"`` at a sentence start) in ``scheme``,
    or ``None`` when it can. Used to check data files line by line; a plain scheme
    (``none``) takes every tag after every other."""
    if scheme not in SPAN_SCHEMES:
        return None
    prefix, label = split_tag(tag)
    allowed_prefixes = _PREFIXES[scheme]
    if tag != OUTSIDE and (prefix not in allowed_prefixes or not label):
        if scheme_of(tag) == "bioes":
            return f"tag {tag!r} is not O or {'/'.join(allowed_prefixes)}-TYPE ({scheme} scheme) but a bioes tag: for a BIOES file, set data.scheme: bioes"
        return (f"tag {tag!r} is not O or {'/'.join(allowed_prefixes)}-TYPE ({scheme} scheme); "
                "for plain tags such as parts of speech, set data.scheme: none")  # fmt: skip
    previous_prefix, previous_label = split_tag(previous)
    continues = prefix in ("I", "E")
    open_entity = previous_prefix in ("B", "I")
    if continues and not (open_entity and previous_label == label):
        return f"{tag} follows {previous}, which breaks the {scheme} scheme ({prefix}-{label} must continue a {label} entity)"
    if scheme == "bioes" and open_entity and not (continues and previous_label == label):
        return f"{tag} follows {previous}, which breaks the bioes scheme ({previous} must be followed by I-{previous_label} or E-{previous_label})"
    return None


def end_problem(last: str, scheme: str) -> Optional[str]:
    """Why a sentence cannot end on ``last`` (bioes entities end on E- or S-)."""
    if scheme == "bioes" and split_tag(last)[0] in ("B", "I"):
        return f"the sentence ends on {last}, which breaks the bioes scheme (an entity ends on E- or S-)"
    return None


def spans(tags: Sequence[str], scheme: str = "bio") -> list[tuple[int, int, str]]:
    """Entities in a tag sequence as ``(start, end, type)`` token ranges, ``end`` exclusive;
    none for a plain scheme (``none``).

    Reads both schemes as conlleval does: an entity starts at B- or S-, or at an I-/E-
    whose type differs from the token before; it ends before O, B-, S-, a type change,
    or after E-/S-.
    """
    if scheme not in SPAN_SCHEMES:
        return []
    found, start, current = [], None, ""
    previous_prefix = OUTSIDE
    for index, tag in enumerate([*tags, OUTSIDE]):
        if tag == OUTSIDE:  # most tags: it ends any open entity and opens none
            if start is not None:
                found.append((start, index, current))
                start = None
            previous_prefix = OUTSIDE
            continue
        prefix, label = split_tag(tag)
        ends = start is not None and (
            prefix in (OUTSIDE, "B", "S") or label != current or previous_prefix in ("E", "S")
        )
        if ends:
            found.append((start, index, current))
            start = None
        if prefix != OUTSIDE and start is None:
            start, current = index, label
        previous_prefix = prefix
    return found


def bio_to_bioes(tags: Sequence[str]) -> list[str]:
    """Rewrite valid BIO tags in BIOES: the last token of an entity becomes E- (or S- alone)."""
    converted = []
    for index, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        following = split_tag(tags[index + 1]) if index + 1 < len(tags) else (OUTSIDE, "")
        continued = following == ("I", label)
        if prefix == "B":
            converted.append(tag if continued else f"S-{label}")
        elif prefix == "I":
            converted.append(tag if continued else f"E-{label}")
        else:
            converted.append(tag)
    return converted


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """Rewrite BIOES tags in BIO: S- becomes B-, E- becomes I-."""
    converted = []
    for tag in tags:
        prefix, label = split_tag(tag)
        converted.append(f"{ {'S': 'B', 'E': 'I'}.get(prefix, prefix)}-{label}" if tag != OUTSIDE else tag)
    return converted


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Tags from one scheme to another (``bio`` / ``bioes``); plain tags (``none``) stay as
    they are."""
    if source == target or "none" in (source, target):
        return list(tags)
    return bio_to_bioes(tags) if target == "bioes" else bioes_to_bio(tags)


def tags_for_types(types: Iterable[str], scheme: str) -> list[str]:
    """Every tag of ``scheme`` for the entity ``types``: ``O`` first, then by type; for a
    plain scheme (``none``), ``types`` are the tags themselves, sorted."""
    if scheme not in SPAN_SCHEMES:
        return sorted(set(types))
    return [OUTSIDE] + [f"{prefix}-{label}" for label in sorted(set(types)) for prefix in _PREFIXES[scheme]]


def allowed_transitions(labels: Sequence[str], scheme: str) -> tuple[list[list[bool]], list[bool], list[bool]]:
    """Which tag may follow which, which may start and which may end a sentence.

    Returns:
        ``(allowed[i][j]`` for i -> j, ``can_start[j]``, ``can_end[i])``; all true for a
        plain scheme (``none``).
    """
    allowed = [[tag_problem(before, after, scheme) is None for after in labels] for before in labels]
    can_start = [tag_problem(OUTSIDE, tag, scheme) is None for tag in labels]
    can_end = [end_problem(tag, scheme) is None for tag in labels]
    return allowed, can_start, can_end
