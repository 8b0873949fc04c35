"""The public request and response bodies as Pydantic models (they also make the OpenAPI spec)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


SPACE_FIELD = ("pin an embedding space (12 hex characters, as X-Clip-Space reports it; the X-Clip-Space request header "
               "does the same): answered by a version of that space while one is served, else 409 space_unavailable or "
               "410 space_retired naming the available ones")


class EmbeddingRequest(BaseModel):
    """Exactly one of text, texts, image, images (images as base64 JPEG, PNG, WebP, GIF or BMP)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "a photo of a dog"}]})
    text: str | None = None
    texts: list[str] | None = None
    image: str | None = Field(default=None, description="base64 image bytes")
    images: list[str] | None = Field(default=None, description="base64 image bytes")
    space: str | None = Field(default=None, description=SPACE_FIELD)

    @model_validator(mode="after")
    def _exactly_one(self) -> "EmbeddingRequest":
        present = [name for name in ("text", "texts", "image", "images") if getattr(self, name) is not None]
        if len(present) != 1:
            raise ValueError(f"expected exactly one of text, texts, image, images; got {present or 'none'}")
        return self

    @property
    def field(self) -> str:
        return next(name for name in ("text", "texts", "image", "images") if getattr(self, name) is not None)


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="base64 image bytes")


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI-style request. Texts: `input` is a string or a list of strings. Images: `input` is
    `{"image": "<base64>"}` or a list of them. One kind per request."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a model id (clip-vit-b-32) or its route (b32)")
    input: Union[str, ImageInput, list[str], list[ImageInput]]
    encoding_format: Literal["float"] = "float"
    user: str | None = None
    space: str | None = Field(default=None, description=SPACE_FIELD)


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class Usage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage = Usage()


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
