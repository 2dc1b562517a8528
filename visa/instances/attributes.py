"""Instance attributes: keys administrators define (with a label) and set on instances, to find
and tell machines apart (a project code, a course, a beamtime's purpose). Only administrators
define, set and filter by them; every change is audited."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import InvalidInput, NotFound
from visa.instances.models import AttributeDefinition, Instance, InstanceAttribute
from visa.instances.schemas import (
    AttributeDefinitionIn,
    AttributeDefinitionOut,
    AttributeIn,
    AttributeOut,
    parse_attribute_filter,
)
from visa.policy import require


def list_definitions(actor: Actor, session: Session) -> list[AttributeDefinitionOut]:
    require(actor, "view_all_instances")
    used = {definition_id: int(n) for definition_id, n in session.execute(
        select(InstanceAttribute.definition_id, func.count()).group_by(InstanceAttribute.definition_id))}
    rows = session.scalars(select(AttributeDefinition).order_by(AttributeDefinition.key))
    return [AttributeDefinitionOut(key=d.key, label=d.label, instances=used.get(d.id, 0)) for d in rows]


def _definition(session: Session, key: str, field: str = "key") -> AttributeDefinition:
    row = session.scalar(select(AttributeDefinition).where(AttributeDefinition.key == key))
    if row is None:
        raise InvalidInput(f"unknown attribute {key[:64]!r}: define it first", field=field)
    return row


def define_attribute(actor: Actor, session: Session, clock: Clock, data: AttributeDefinitionIn) -> tuple[
        AttributeDefinitionOut, bool]:
    """Define a key, or change its label; returns it and whether it is new. Audited."""
    require(actor, "manage_attributes")
    row = session.scalar(select(AttributeDefinition).where(AttributeDefinition.key == data.key))
    created = row is None
    if row is None:
        row = AttributeDefinition(key=data.key, label=data.label, created_at=clock.now())
        session.add(row)
    elif row.label == data.label:
        return _definition_out(session, row), False
    old = None if created else row.label
    row.label = data.label
    session.flush()
    record(actor, session, clock, "attribute.define", target_type="attribute", target_id=row.key,
           old=old, new=row.label)
    return _definition_out(session, row), created


def _definition_out(session: Session, row: AttributeDefinition) -> AttributeDefinitionOut:
    used = session.scalar(select(func.count()).select_from(InstanceAttribute)
                          .where(InstanceAttribute.definition_id == row.id)) or 0
    return AttributeDefinitionOut(key=row.key, label=row.label, instances=used)


def delete_definition(actor: Actor, session: Session, clock: Clock, key: str) -> None:
    """Remove a key and its values on every instance. Audited with how many it had."""
    require(actor, "manage_attributes")
    row = session.scalar(select(AttributeDefinition).where(AttributeDefinition.key == key))
    if row is None:
        raise NotFound("no such attribute", field="key")
    used = _definition_out(session, row).instances
    for value in session.scalars(select(InstanceAttribute).where(InstanceAttribute.definition_id == row.id)):
        session.delete(value)
    session.delete(row)
    session.flush()
    record(actor, session, clock, "attribute.delete", target_type="attribute", target_id=key, instances=used)


def attributes_of(instance: Instance) -> list[AttributeOut]:
    return sorted((AttributeOut(key=a.definition.key, label=a.definition.label, value=a.value)
                   for a in instance.attributes), key=lambda a: a.key)


def set_attribute(actor: Actor, session: Session, clock: Clock, instance: Instance, data: AttributeIn) -> None:
    """Give an instance a value for a defined key (an unknown key is refused, naming ``key``). Audited."""
    require(actor, "instance.attributes", instance)
    definition = _definition(session, data.key)
    current = next((a for a in instance.attributes if a.definition_id == definition.id), None)
    old = current.value if current is not None else None
    if old == data.value:
        return
    if current is None:
        instance.attributes.append(InstanceAttribute(definition=definition, value=data.value))
    else:
        current.value = data.value
    session.flush()
    record(actor, session, clock, "instance.attribute", target_type="instance", target_id=instance.uid,
           key=data.key, old=old, new=data.value)


def unset_attribute(actor: Actor, session: Session, clock: Clock, instance: Instance, key: str) -> None:
    require(actor, "instance.attributes", instance)
    definition = _definition(session, key)
    current = next((a for a in instance.attributes if a.definition_id == definition.id), None)
    if current is None:
        raise NotFound(f"the instance has no {key!r} attribute", field="key")
    instance.attributes.remove(current)
    session.flush()
    record(actor, session, clock, "instance.attribute", target_type="instance", target_id=instance.uid,
           key=key, old=current.value, new=None)


def attribute_filters(session: Session, items: list[str]) -> list[tuple[int, str]]:
    """The ``attribute`` filter's ``key:value`` items as (definition id, value); an unknown key is
    refused, naming ``attribute``."""
    out = []
    for item in items:
        key, value = parse_attribute_filter(item)
        out.append((_definition(session, key, field="attribute").id, value))
    return out
