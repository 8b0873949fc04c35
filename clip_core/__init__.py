"""The shared ground every layer stands on: model configs (shipped as package data), resource and
environment-variable names, request limits, the smoke-test case format and the s3 helpers.

Nothing here imports another package of this project; the serving container copies the modules it
needs (limits, names), so this package imports no third-party library at import time either.
"""
