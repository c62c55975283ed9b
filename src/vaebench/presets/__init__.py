"""The built-in study presets, as package data: one TOML file per preset
(``vaebench presets``; the files are read by :mod:`vaebench.harness.presets`)."""
