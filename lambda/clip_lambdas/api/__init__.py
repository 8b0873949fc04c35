"""The public embeddings API: API Gateway (REST) -> this Lambda -> the model's serverless endpoint."""
