"""The gate an artifact passes before it is registered: it is measured as an endpoint serves it (parity with
open_clip on the probe set, golden references, sanity checks, latency) and judged against its model config.

Runs where torch and open_clip are installed (developer machines, the SageMaker Processing image).
"""
