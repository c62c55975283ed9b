"""vaebench-plugin-example: a vaebench plugin (hooks in :mod:`vaebench_plugin_example.plugin`)."""

__version__ = "0.1.0"
