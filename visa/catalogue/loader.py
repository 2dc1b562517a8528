"""Reads catalogue files and reports every problem with its file, entry and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from visa.catalogue.schemas import FlavourSpec, ImageSpec, NetworkRuleSpec
from visa.errors import InvalidInput

MAX_FILE_BYTES = 1_000_000
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Sourced(Generic[T]):  # Python 3.11
    """A validated entry and where it came from."""

    spec: T
    file: str


@dataclass
class Catalogue:
    flavours: list[Sourced[FlavourSpec]]
    images: list[Sourced[ImageSpec]]
    network_rules: list[Sourced[NetworkRuleSpec]] = field(default_factory=list)


class CatalogueError(InvalidInput):
    """Every problem found in the files at once, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid catalogue:\n  " + "\n  ".join(problems), problems=problems)
        self.problems = problems


def _yaml_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise CatalogueError([f"{path}: no such file or directory"])
    return files


def _entry_label(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return f"entry {raw['name'][:64]!r}"
    return f"entry #{index + 1}"


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(entry)"


def _parse(model: type[T], raw: Any, file: Path, index: int, problems: list[str]) -> T | None:
    label = _entry_label(raw, index)
    if not isinstance(raw, dict):
        problems.append(f"{file}: {label}: expected a mapping, got {type(raw).__name__}")
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(f"{file}: {label}: field '{_field(err['loc'])}': {err['msg']}")
        return None


def _kind_of(raw: dict[str, Any], file: Path) -> type[BaseModel] | None:
    kind = raw.get("kind")
    if kind == "flavour" or (kind is None and file.parent.name == "flavours"):
        return FlavourSpec
    if kind == "image" or (kind is None and file.parent.name == "images"):
        return ImageSpec
    if kind == "network_rule" or (kind is None and file.parent.name == "network-rules"):
        return NetworkRuleSpec
    return None


def load(paths: list[Path], known_flavours: frozenset[str] = frozenset()) -> Catalogue:
    """Read and validate the files; raise :class:`CatalogueError` listing every problem.

    ``known_flavours`` are flavours already stored, which plans may name too.
    """
    problems: list[str] = []
    catalogue = Catalogue(flavours=[], images=[])
    for file in _yaml_files(paths):
        if file.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{file}: larger than {MAX_FILE_BYTES} bytes")
            continue
        try:
            documents = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if d is not None]
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"{file}: not valid YAML: {str(exc).splitlines()[0]}")
            continue
        entries: list[Any] = []
        for doc in documents:
            entries.extend(doc if isinstance(doc, list) else [doc])
        for index, raw in enumerate(entries):
            model = _kind_of(raw, file) if isinstance(raw, dict) else None
            if isinstance(raw, dict):
                raw = {k: v for k, v in raw.items() if k != "kind"}
            if model is None:
                problems.append(
                    f"{file}: {_entry_label(raw, index)}: field 'kind': say 'flavour', 'image' or "
                    "'network_rule' (or keep the file under flavours/, images/ or network-rules/)"
                )
                continue
            spec = _parse(model, raw, file, index, problems)
            if isinstance(spec, FlavourSpec):
                catalogue.flavours.append(Sourced(spec, str(file)))
            elif isinstance(spec, ImageSpec):
                catalogue.images.append(Sourced(spec, str(file)))
            elif isinstance(spec, NetworkRuleSpec):
                catalogue.network_rules.append(Sourced(spec, str(file)))
    problems.extend(_cross_check(catalogue, known_flavours))
    if problems:
        raise CatalogueError(problems)
    return catalogue


def _cross_check(catalogue: Catalogue, known_flavours: frozenset[str]) -> list[str]:
    problems: list[str] = []
    kinds: tuple[tuple[str, list[Any]], ...] = (
        ("flavour", catalogue.flavours), ("image", catalogue.images), ("network rule", catalogue.network_rules)
    )
    for label, items in kinds:
        seen: dict[str, str] = {}
        for item in items:
            name = item.spec.name
            if name in seen:
                problems.append(
                    f"{item.file}: entry {name!r}: field 'name': duplicate {label} name (also in {seen[name]})"
                )
            seen.setdefault(name, item.file)
    flavour_names = {f.spec.name for f in catalogue.flavours} | known_flavours
    presets: list[str] = []
    for item in catalogue.images:
        for i, plan in enumerate(item.spec.plans):
            if plan.flavour not in flavour_names:
                problems.append(
                    f"{item.file}: entry {item.spec.name!r}: field 'plans.{i}.flavour': "
                    f"unknown flavour {plan.flavour!r}"
                )
            if plan.preset:
                presets.append(f"{item.spec.name}/{plan.flavour}")
    for rule in catalogue.network_rules:
        for i, name in enumerate(rule.spec.flavours):
            if name not in flavour_names:
                problems.append(
                    f"{rule.file}: entry {rule.spec.name!r}: field 'flavours.{i}': unknown flavour {name!r}"
                )
    if len(presets) > 1:
        problems.append(f"plans: only one plan may be the preset, found {len(presets)}: {', '.join(presets)}")
    return problems
