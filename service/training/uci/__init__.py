"""The MC dropout paper's UCI regression benchmark (Gal & Ghahramani 2016, Table 1)."""
