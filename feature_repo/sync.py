"""Apply is a sync: the registry ends up holding exactly what the project defines.

Feast's own semantics, through Feast's own functions: :func:`plan` is ``feast plan`` (what will be added,
changed and removed, from ``FeatureStore.plan``), :func:`sync` is ``feast apply`` (``apply_total_with_repo_
instance``: objects the definitions no longer have are deleted, their online tables torn down). Two checks
come first, so a mistake costs one line and writes nothing: every definition module must import, and every
file source must exist.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.project import Project
from feature_repo.definitions import load_definitions
from feature_repo.services import forget_plans
from feature_repo.sources import check_sources

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

_HIDDEN = ("__dummy",)  # Feast's placeholder entity for entity-less views
_VOLATILE = frozenset({"created_timestamp", "last_updated_timestamp"})


@dataclass(frozen=True)
class Change:
    kind: str  # Feast's object type: entity, feature view, on demand feature view, feature service, data source...
    name: str
    action: str  # add | change | remove
    details: tuple[str, ...] = ()


@dataclass
class Plan:
    """What applying the project's definitions changes in the registry."""

    project: str
    changes: list[Change] = field(default_factory=list)
    applied: bool = False

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        out = {"add": 0, "change": 0, "remove": 0}
        for change in self.changes:
            out[change.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "applied": self.applied, **self.counts(),
                "changes": [{"kind": c.kind, "name": c.name, "action": c.action, "details": list(c.details)}
                            for c in self.changes]}

    def to_text(self) -> str:
        if not self.changes:
            return f"Feast project {self.project}: no changes"
        verb = "applied" if self.applied else "to apply"
        c = self.counts()
        lines = [f"Feast project {self.project}: {c['add']} to add, {c['change']} to change, "
                 f"{c['remove']} to remove ({verb})"]
        sign = {"add": "+", "change": "~", "remove": "-"}
        for change in self.changes:
            lines.append(f"  {sign[change.action]} {change.kind} {change.name}")
            lines.extend(f"      {d}" for d in change.details)
        return "\n".join(lines)


def _changes(registry_diff: Any) -> list[Change]:
    from feast.diff.registry_diff import TransitionType

    action = {TransitionType.CREATE: "add", TransitionType.UPDATE: "change", TransitionType.DELETE: "remove"}
    out = []
    for diff in registry_diff.feast_object_diffs:
        verb = action.get(diff.transition_type)
        kind = getattr(diff.feast_object_type, "value", str(diff.feast_object_type))
        if verb is None or diff.name.startswith(_HIDDEN) or kind == "project":
            continue
        real = [p for p in diff.feast_object_property_diffs or [] if _differs(p.val_existing, p.val_declared)]
        if verb == "change" and not real:
            continue
        details = tuple(f"{p.property_name}: {_short(p.val_existing)} -> {_short(p.val_declared)}" for p in real[:5])
        out.append(Change(kind, diff.name, verb, details if verb == "change" else ()))
    order = {"remove": 0, "change": 1, "add": 2}
    return sorted(out, key=lambda c: (order[c.action], c.kind, c.name))


def _differs(existing: Any, declared: Any) -> bool:
    """A property really changed: Feast 0.67 compares a feature view's embedded batch source with its
    ``meta`` timestamps, so every apply would otherwise report every file-backed view as changed."""
    if hasattr(existing, "ListFields") and hasattr(declared, "ListFields"):
        return _scrubbed(existing) != _scrubbed(declared)
    return bool(existing != declared)


def _scrubbed(message: Any) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    _scrub(copy)
    return copy.SerializeToString(deterministic=True)


def _scrub(message: Any) -> None:
    """Clear, recursively, the timestamps ``apply`` writes."""
    for field_desc, value in list(message.ListFields()):
        if field_desc.name in _VOLATILE:
            message.ClearField(field_desc.name)
        elif field_desc.message_type is not None:
            if field_desc.is_repeated:
                if field_desc.message_type.GetOptions().map_entry:
                    value_desc = field_desc.message_type.fields_by_name["value"]
                    if value_desc.message_type is not None:
                        for item in value.values():
                            _scrub(item)
                    continue
                for item in value:
                    _scrub(item)
            else:
                _scrub(value)


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _desired(store: FeatureStore, project: Project) -> Any:
    contents = load_definitions(project, store.project)
    check_sources(contents.feature_views, store.config.repo_path)
    return contents


def plan(store: FeatureStore, project: Project) -> Plan:
    """What :func:`sync` would change (nothing is written)."""
    contents = _desired(store, project)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        registry_diff, _, _ = store.plan(contents)
    return Plan(store.project, _changes(registry_diff))


def sync(store: FeatureStore, project: Project) -> Plan:
    """Make the registry hold exactly the project's definitions; returns what changed.

    Nothing is written when nothing changed, so concurrent readers (gateway replicas, other flows) are not
    disturbed by every materialization run re-applying the same definitions.
    """
    from feast.repo_operations import apply_total_with_repo_instance

    contents = _desired(store, project)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        registry_diff, _, _ = store.plan(contents)
        result = Plan(store.project, _changes(registry_diff))
        if result.has_changes or not _project_registered(store):
            # Feast's apply: deletes what the definitions no longer have and tears down its online tables.
            apply_total_with_repo_instance(store, store.project, store.registry, contents,
                                           skip_source_validation=False)
            result.applied = True
    if result.applied:
        forget_plans(store)
        store.refresh_registry()
        log.info("applied Feast definitions of %s: %s", project.root, result.counts())
    return result


def _project_registered(store: FeatureStore) -> bool:
    try:
        return any(p.name == store.project for p in store.registry.list_projects())
    except Exception:  # noqa: BLE001 - an older registry without projects: apply to be sure
        return False
