"""The promotion workflow's planner: reads an approved model package and plans its promotion (promotion.plan)."""
