"""Everything pluggable: hookspecs, the plugin manager and the built-in plugins."""
