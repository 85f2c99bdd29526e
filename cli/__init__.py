"""The ``accel`` command line (typer). Commands only parse and call library functions."""
