"""Entities: what the features describe."""

from feast import Entity, ValueType

us_state = Entity(
    name="us_state",
    join_keys=["state"],
    value_type=ValueType.STRING,
    description="A US state or DC, by its two-letter postal code.",
)
