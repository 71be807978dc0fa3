"""Face models behind one interface. Nothing here imports torch or dlib until a model is built."""

from __future__ import annotations

from ..errors import FaceidxError
from ..settings import Settings
from .base import FaceModel

MODEL_NAMES = ("facenet", "dlib")


def create_model(name: str, settings: Settings) -> FaceModel:
    """Build (but do not load) the named model; `load()` fetches weights on first use."""
    if name == "dlib":
        from .dlib_model import DlibModel

        return DlibModel(settings)
    if name == "facenet":
        from .facenet_model import FacenetModel

        return FacenetModel(settings)
    raise FaceidxError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


__all__ = ["MODEL_NAMES", "FaceModel", "create_model"]
