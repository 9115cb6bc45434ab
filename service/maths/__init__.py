"""Pure mathematics: numpy and scipy only, no torch, no web framework, no I/O."""
