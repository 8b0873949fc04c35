"""The serving pointer: which endpoint serves a model, one DynamoDB item per model.

Only the promotion workflow writes it (a conditional PutItem: compare-and-set on the endpoint it
planned against); the API Lambdas and the planner read it. CloudFormation creates the table but
never an item, so a stack update cannot change which endpoint serves. A Lambda environment
variable could not give that: CloudFormation owns a function's whole environment and resets it on
any configuration change, and Lambda has no conditional update.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE_ENV = "SERVING_POINTER_TABLE"
KEY = "model_id"


@dataclass(frozen=True)
class ServingPointer:
    model_id: str
    endpoint_name: str = ""  # "" means nothing serves (before the first promotion, or after a first one rolled back)
    version: int = 0
    package_arn: str = ""

    def to_item(self) -> dict:
        """DynamoDB's attribute-value form, as the workflow's PutItem and GetItem speak it."""
        return {KEY: {"S": self.model_id}, "endpoint_name": {"S": self.endpoint_name}, "version": {"N": str(self.version)},
                "package_arn": {"S": self.package_arn}}

    @classmethod
    def from_item(cls, model_id: str, item: dict | None) -> "ServingPointer":
        if not item:
            return cls(model_id)
        return cls(model_id, item.get("endpoint_name", {}).get("S", ""), int(item.get("version", {}).get("N", "0")),
                   item.get("package_arn", {}).get("S", ""))


def read_pointer(dynamodb, table: str, model_id: str, consistent: bool = False) -> ServingPointer:
    item = dynamodb.get_item(TableName=table, Key={KEY: {"S": model_id}}, ConsistentRead=consistent).get("Item")
    return ServingPointer.from_item(model_id, item)
