"""The inference plane: the registry of loaded models, the runners that draw MC samples off the
event loop, and the predict flow that ties them together. No HTTP here."""
