"""The built-in experiment trackers (``--log-to``): ``mlflow``, ``tensorboard``, ``wandb``,
each in its own module that imports its library at the top (so a missing extra is found
when the grid is checked), sharing :mod:`.common`."""
