"""The company's label system as data: taxonomy, source mappings, hierarchy, prior rules."""

from label_system.errors import LabelSystemError
from label_system.taxonomy import (
    Category,
    Tag,
    Taxonomy,
    default_data_path,
    load_default_taxonomy,
    load_taxonomy,
)

__all__ = [
    "Category",
    "LabelSystemError",
    "Tag",
    "Taxonomy",
    "default_data_path",
    "load_default_taxonomy",
    "load_taxonomy",
]
