"""One module per method; importing it registers its names (explicit, like timm.models)."""
