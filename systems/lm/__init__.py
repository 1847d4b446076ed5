"""Language models with pluggable sparse attention: the methods live in systems.lm.attention."""
