"""One router per concern: predict, models, health, metrics."""
