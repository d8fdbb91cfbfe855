"""The torch-free front door of every command: the one frame that turns a mistake into one
``error:`` line (``entry``), config checks before anything heavy loads (``validation``), Hydra's
messages made short (``hydra_errors``) and the run-time switches (``extras``)."""
