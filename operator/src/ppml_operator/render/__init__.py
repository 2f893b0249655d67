"""Pure rendering of the child objects of each kind: plain dicts from ``render_*`` functions."""
