"""The company's label system as data: taxonomy, source mappings, hierarchy, prior rules."""

from label_system.errors import LabelSystemError
from label_system.hierarchy import (
    HierarchyReport,
    OpenImagesHierarchy,
    parse_openimages_hierarchy,
    read_class_descriptions,
    read_openimages_hierarchy,
)
from label_system.mapping import (
    CoverageReport,
    MappingEntry,
    SourceMapping,
    coverage_report,
    identity_mapping,
    load_default_mapping,
    load_default_mappings,
    load_mapping,
    normalize_label,
)
from label_system.priors import (
    PriorRules,
    check_priors,
    load_default_priors,
    load_priors,
)
from label_system.taxonomy import (
    Category,
    Guideline,
    Tag,
    Taxonomy,
    default_data_path,
    load_default_taxonomy,
    load_taxonomy,
)

__all__ = [
    "Category",
    "CoverageReport",
    "Guideline",
    "HierarchyReport",
    "LabelSystemError",
    "MappingEntry",
    "OpenImagesHierarchy",
    "PriorRules",
    "SourceMapping",
    "Tag",
    "Taxonomy",
    "check_priors",
    "coverage_report",
    "default_data_path",
    "identity_mapping",
    "load_default_mapping",
    "load_default_mappings",
    "load_default_priors",
    "load_default_taxonomy",
    "load_mapping",
    "load_priors",
    "load_taxonomy",
    "normalize_label",
    "parse_openimages_hierarchy",
    "read_class_descriptions",
    "read_openimages_hierarchy",
]
