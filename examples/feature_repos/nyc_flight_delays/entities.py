"""Entities: what the features describe."""

from feast import Entity, ValueType

aircraft = Entity(
    name="aircraft",
    join_keys=["tailnum"],
    value_type=ValueType.STRING,
    description="An aircraft, by its US registration (tail number).",
)

airport = Entity(
    name="airport",
    join_keys=["origin"],
    value_type=ValueType.STRING,
    description="A New York City airport (EWR, JFK, LGA): context shared by the aircraft "
    "leaving it.",
)
