"""lens: capture, directions, SAE features and exact steering for base vs thinking models."""

from .errors import LensError
from .hooks import add_hook, hooks
from .models import Model, load_model, load_pair
from .sites import Site

__version__ = "0.1.0"

__all__ = ["LensError", "Model", "Site", "add_hook", "hooks", "load_model", "load_pair", "__version__"]
