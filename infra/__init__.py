"""Infrastructure as code: CloudFormation templates generated from the model configs (one per stack)."""
