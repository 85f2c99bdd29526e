"""Benchmarks behind ``accel bench ...`` and ``accel calibrate`` (they report; they do not assert)."""
