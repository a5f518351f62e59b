"""Entities: what the features describe."""

from feast import Entity, ValueType

account = Entity(
    name="account",
    join_keys=["account_id"],
    value_type=ValueType.STRING,
    description="A subscribing account.",
)

tier = Entity(
    name="tier",
    join_keys=["plan_tier"],
    value_type=ValueType.STRING,
    description="A plan tier: context shared by its accounts.",
)
