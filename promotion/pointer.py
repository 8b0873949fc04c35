"""The serving pointer: which endpoint serves a model, one DynamoDB item per model.

Only the promotion workflow writes it (a conditional PutItem: compare-and-set on the item's
`revision`, which every workflow write increments); the API Lambdas and the planner read it.
CloudFormation creates the table but never an item, so a stack update cannot change which
endpoint serves. A Lambda environment variable could not give that: CloudFormation owns a
function's whole environment and resets it on any configuration change, and Lambda has no
conditional update.

Embedding spaces (issue 17): `endpoint_name` serves the stable URL and embeds in `space`;
`spaces` maps every space the model still serves to its endpoint, the stable one included, so a
client that pins a space is answered from an endpoint in that space. A space the stable URL has
left is served until `retire_after` (epoch seconds), then answered 410.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEY = "model_id"
SPACE_PATTERN = re.compile(r"[0-9a-f]{12}")  # inference_code.manifest.embedding_space


@dataclass(frozen=True)
class SpaceRoute:
    endpoint_name: str
    version: int
    retire_after: int = 0  # epoch seconds after which the space is no longer served; 0: while it serves the stable URL or has its own

    def to_value(self) -> dict:
        return {"M": {"endpoint_name": {"S": self.endpoint_name}, "version": {"N": str(self.version)},
                      "retire_after": {"N": str(self.retire_after)}}}

    @classmethod
    def from_value(cls, value: dict) -> "SpaceRoute":
        fields_ = value.get("M", {})
        return cls(fields_.get("endpoint_name", {}).get("S", ""), int(fields_.get("version", {}).get("N", "0")),
                   int(fields_.get("retire_after", {}).get("N", "0")))

    def retired(self, now: float) -> bool:
        return bool(self.retire_after) and now >= self.retire_after


@dataclass(frozen=True)
class ServingPointer:
    model_id: str
    endpoint_name: str = ""  # "" means nothing serves (before the first promotion, or after a first one rolled back)
    version: int = 0
    package_arn: str = ""
    space: str = ""  # the stable endpoint's embedding space ("" on items written before spaces existed)
    spaces: dict[str, SpaceRoute] = field(default_factory=dict)
    revision: int = 0  # incremented by every workflow write; 0: never written with one

    def to_item(self) -> dict:
        """DynamoDB's attribute-value form, as the workflow's PutItem and GetItem speak it."""
        return {KEY: {"S": self.model_id}, "endpoint_name": {"S": self.endpoint_name}, "version": {"N": str(self.version)},
                "package_arn": {"S": self.package_arn}, "space": {"S": self.space},
                "spaces": {"M": {space: route.to_value() for space, route in sorted(self.spaces.items())}},
                "revision": {"N": str(self.revision)}}

    @classmethod
    def from_item(cls, model_id: str, item: dict | None) -> "ServingPointer":
        if not item:
            return cls(model_id)
        spaces = {space: SpaceRoute.from_value(value) for space, value in item.get("spaces", {}).get("M", {}).items()}
        return cls(model_id, item.get("endpoint_name", {}).get("S", ""), int(item.get("version", {}).get("N", "0")),
                   item.get("package_arn", {}).get("S", ""), item.get("space", {}).get("S", ""), spaces,
                   int(item.get("revision", {}).get("N", "0")))

    def served_endpoints(self) -> set[str]:
        """Every endpoint this pointer sends traffic to: none of them may be deleted."""
        return {name for name in [self.endpoint_name, *(route.endpoint_name for route in self.spaces.values())] if name}


@dataclass(frozen=True)
class SpaceAnswer:
    """Where a request that pins `space` goes: an endpoint, or why none (`unavailable`: 409, `retired`: 410)."""

    endpoint_name: str = ""
    problem: str = ""  # "" | "unavailable" | "retired"
    available: tuple[str, ...] = ()


def route_space(pointer: ServingPointer, space: str | None, now: float) -> SpaceAnswer:
    """The endpoint for a request; `space` None or the stable URL's own space: the stable endpoint."""
    available = tuple(sorted({s for s, route in pointer.spaces.items() if not route.retired(now)} | ({pointer.space} if pointer.space else set())))
    if space is None or (space == pointer.space and pointer.endpoint_name):
        return SpaceAnswer(pointer.endpoint_name, available=available)
    route = pointer.spaces.get(space)
    if route is None or not route.endpoint_name:
        return SpaceAnswer(problem="unavailable", available=available)
    if route.retired(now):
        return SpaceAnswer(problem="retired", available=available)
    return SpaceAnswer(route.endpoint_name, available=available)


def read_pointer(dynamodb, table: str, model_id: str, consistent: bool = False) -> ServingPointer:
    item = dynamodb.get_item(TableName=table, Key={KEY: {"S": model_id}}, ConsistentRead=consistent).get("Item")
    return ServingPointer.from_item(model_id, item)
