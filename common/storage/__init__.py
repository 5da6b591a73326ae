"""Object storage for uploaded blobs."""

from common.storage.base import ObjectStore

__all__ = ["ObjectStore"]
