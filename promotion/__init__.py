"""The deploy half of the loop: an approved model package becomes the served version, or is rolled back.

plan.py decides (pure functions); the Step Functions workflow (state_machine.py -> promotion.asl.json)
acts, and two small Lambdas sit inside it: the planner, which reads AWS and calls plan.py, and the
smoke test, which really invokes the new endpoint.
"""
