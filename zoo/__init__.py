"""zoo: a timm-style model zoo of self-supervised masking pretrainers."""
from zoo.registry import create_pretrainer, list_methods
from zoo import methods  # noqa: F401  (registers every method)
from zoo.factory import create_masker, create_model, list_models, list_pretrained
from zoo.weights import ZooWeightsError
from zoo import timm_entries as _timm_entries

__version__ = "0.1.0"
__all__ = ["create_model", "create_masker", "create_pretrainer", "list_methods", "list_models",
           "list_pretrained", "ZooWeightsError"]

# Once every method module has registered: make each name a timm model too (zoo.timm_entries says
# when it syncs again).
_timm_entries.sync()
