"""``unet-natural``: its training recipe (``recipe.py``), settings (``model.json``) and weights (``weights/``)."""
