"""zoo: a timm-style model zoo of self-supervised masking pretrainers."""
from zoo.registry import create_pretrainer, list_methods
from zoo import methods  # noqa: F401  (registers every method)

__version__ = "0.1.0"
