"""The promotion workflow's smoke test: really invokes a new endpoint with the references Validate wrote."""
