"""Schema building blocks shared by every resource."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base of response models."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Request(BaseModel):
    """Base of request bodies: unknown keys are ignored, as Galaxy does."""

    model_config = ConfigDict(extra="ignore", str_max_length=1_000_000)


class Query(BaseModel):
    """Base of query parameter sets."""

    model_config = ConfigDict(extra="ignore")
