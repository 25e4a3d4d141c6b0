"""The sweep spec: its schema (`schema`), how a YAML file becomes one (`parsing`) and its checks (`checks`)."""

from correctsweep.config.checks import OBJECTIVES, POLICIES, validate
from correctsweep.config.parsing import from_mapping, load_spec, parse_override, spec_from_dict
from correctsweep.config.schema import (
    BaseNetConfig,
    CorrectorConfig,
    DataConfig,
    DetectorsConfig,
    FeaturesConfig,
    ReportConfig,
    ResourcesConfig,
    SchedulerConfig,
    Spec,
    as_dict,
    settings_of,
)

__all__ = ["OBJECTIVES", "POLICIES", "BaseNetConfig", "CorrectorConfig", "DataConfig", "DetectorsConfig",
           "FeaturesConfig", "ReportConfig", "ResourcesConfig", "SchedulerConfig", "Spec", "as_dict", "from_mapping",
           "load_spec", "parse_override", "settings_of", "spec_from_dict", "validate"]
