"""Dataset adapters (one module per dataset), records schema, splits and caches."""
