"""Every model module, imported here so that Base.metadata knows all tables."""

from app.models.base import Base
from app.models import queue  # noqa: F401

__all__ = ["Base"]
