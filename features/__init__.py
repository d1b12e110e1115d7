"""The HDF5 feature store: the contract between stage one and stage two.

``FeatureWriter`` creates, resumes and finalises a cache; ``FeatureStore`` reads one. The format
is specified in :mod:`features.schema`.
"""

from .reader import FeatureStore, SampleRecord
from .schema import SCHEMA_VERSION
from .writer import FeatureWriter

__all__ = ["FeatureStore", "FeatureWriter", "SampleRecord", "SCHEMA_VERSION"]
