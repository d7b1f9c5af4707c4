"""One module per method; importing it registers its names (explicit, like timm.models)."""
from zoo.methods import adios, automae  # noqa: F401,E401  (helper methods-learned)
from zoo.methods import controls, extrema  # noqa: F401,E401  (helper methods-core)
from zoo.methods import hpm  # noqa: F401  (helper HPM)
