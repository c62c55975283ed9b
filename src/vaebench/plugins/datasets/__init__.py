"""Built-in datasets. Each module registers nothing itself; ``plugins.builtin`` does."""
