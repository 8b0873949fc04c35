"""clip-embedding-api: CLIP embeddings as a service, from model build to stable URLs."""

__version__ = "0.1.0"
