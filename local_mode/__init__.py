"""Local mode: the whole loop on one machine, with moto standing in for the AWS control plane."""
