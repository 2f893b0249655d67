"""Flower federations: ServerApp, ClientApp and the ``superlink``/``supernode``/``submit`` roles.

Nothing here imports flwr or torch at package import; each role imports what it needs.
"""
