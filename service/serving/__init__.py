"""The inference plane: runners that turn sample jobs into engine passes, off the event loop."""
