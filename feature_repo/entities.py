"""Entities: what the features describe."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A telco customer (ids are never reused).",
)
