"""``wan22-shapes``: its training recipe (``recipe.py``), settings (``model.json``) and weights (``weights/``)."""
