"""Response shapes, declared for the OpenAPI page at /docs (answers are built as plain dicts)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    name: str = Field(description="Model name (the recipe), or the architecture.")
    architecture: str
    version: str = Field(description="First 12 hex digits of the weights' SHA-256.")
    created: str
    backend: str = Field(description="What runs the model: torch, onnx, openvino, onnx-int8, openvino-int8.")


class Prediction(BaseModel):
    file: str = Field(description="The uploaded file's name (echoed, never used as a path).")
    predicted: str | None = Field(alias="class", description="Predicted class at the model's threshold; "
                                  "null when the image is refused as out of distribution.")
    index: int | None
    probability: float | None = Field(description="Probability of the predicted class (null when refused).")
    probabilities: dict[str, float] = Field(description="Every class's probability (also when refused).")
    ood_score: float | None = Field(description="Out-of-distribution score: how far the image lies from "
                                    "the training images (null: the model has no statistics).")
    outside: bool = Field(description="The score is past the model's OOD threshold.")
    refused: bool = Field(description="Outside, and the server refuses such images (--ood refuse): "
                          "answered 'answer' instead of a class.")
    answer: str | None = Field(default=None, description="'outside what this model was trained on' "
                               "when refused.")


class OodInfo(BaseModel):
    threshold: float
    method: str | None
    mode: str = Field(description="refuse (no class for an image past the threshold) or flag.")
    keep: float | None = Field(description="Share of validation images the threshold keeps.")


class PredictResponse(BaseModel):
    model: ModelInfo
    classes: list[str]
    threshold: float = Field(description="Two classes: the second is predicted when its "
                             "probability is at least this; more classes: the most probable.")
    ood: OodInfo | None = Field(description="The OOD threshold and mode (null: no statistics).")
    predictions: list[Prediction]
    timing_ms: dict[str, float] = Field(description="read, decode, inference (queue included), total.")


class ErrorResponse(BaseModel):
    error: str = Field(description="One-line message naming the file and the problem.")
    code: str = Field(description="Machine-readable reason: too_large, unsupported_type, ...")
    status: int
    file: str | None = None


class HealthResponse(BaseModel):
    status: str
    backend: str
    in_flight: int
    max_queue: int
    batches: int
    images: int
    uptime_s: float


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "No file, an empty file or a malformed body.",
        401: "A token is set (--token-file, IMAGECLF_TOKEN) and the request has not carried it.",
        408: "The upload did not arrive within the request timeout.",
        413: "Body, image or file count over the limits.",
        415: "Not an image format the server reads (sniffed from the bytes).",
        422: "An image that cannot be decoded (truncated, corrupt).",
        503: "Queue full or the request took too long; retry after the Retry-After seconds.",
    }.items()
}
