"""`clip-api bench`: the open_clip baseline server vs the packaged fp32 and int8 artifacts, through /invocations.

Runs on developer machines (torch, open_clip); no pipeline step imports it.
"""
