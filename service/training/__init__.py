"""Offline model making: training, stacked training, tuning, the UCI protocol, packaging."""
