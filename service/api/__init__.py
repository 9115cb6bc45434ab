"""HTTP layer: routes translate requests into calls on the inference plane. No torch here."""
