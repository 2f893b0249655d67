"""The model card of a federation's final global model (``README.md`` beside ``model-card.json``).

A PrivateTrainingJob's card (:func:`ppml_runtime.release.artifact.render_readme`) describes one
DP-SGD run on one data set; a federation's describes the rounds, the silos' data sets and what
each budget was charged, and says what the privacy mode protects: one silo's whole contribution
(Central: client-level DP), each record of each silo (Local: DP-SGD in every silo), or nothing
(None).
"""

from __future__ import annotations

from typing import Any

from ppml_runtime.release.artifact import LOADING_SECTION, markdown_table

FEDERATED_CARD_RUNTIME_KEYS = frozenset({
    "format", "job", "jobNamespace", "architecture", "rounds", "privacyMode", "clients",
    "trainRecords", "created", "modelSha256"})
"""What the runtime writes into a federation's card itself (the rest is the operator's)."""

_GUARANTEE = {
    "Central": "differentially private at the client level: the (ε, δ) below bounds what it "
               "reveals about any one silo's whole contribution",
    "Local": "trained with DP-SGD inside every silo: the (ε, δ) charged to each silo's budget "
             "bounds what it reveals about any one of that silo's records",
    "None": "not differentially private",
}

_LABELS = {
    "datasets": "Data sets (namespace/name)",
    "chargedEpsilon": "ε charged (per budget or silo)",
    "delta": "δ",
    "accountant": "Accountant",
    "noiseMultiplier": "Noise multiplier",
    "sampleRate": "Client sampling rate",
    "clippingNorm": "Clipping norm",
}


def render_federated_readme(card: dict[str, Any]) -> str:
    """Render a federation's model card as Markdown for people (``README.md``)."""
    mode = str(card.get("privacyMode", "None"))
    guarantee = _GUARANTEE.get(mode, f"trained under privacy mode {mode}")
    operator_fields = [(_LABELS.get(key, key), value) for key, value in card.items()
                       if key not in FEDERATED_CARD_RUNTIME_KEYS and key != "privacyMode"]
    lines = [
        f"# Model card: {card['jobNamespace']}/{card['job']}",
        "",
        f"The final global model of a Flower federation run by ppml-operator over "
        f"{card.get('clients', '?')} silos, each in its data owner's namespace. It is "
        f"{guarantee}.",
        "",
        *markdown_table([
            ("Job", f"{card['jobNamespace']}/{card['job']}"),
            ("Architecture", card["architecture"]),
            ("Rounds", card["rounds"]),
            ("Silos", card.get("clients")),
            ("Training records (all silos)", card.get("trainRecords")),
            ("Created", card["created"]),
            ("model.safetensors SHA-256", card.get("modelSha256")),
        ]),
        "",
        "## Privacy",
        "",
        *markdown_table([("Privacy mode", mode), *operator_fields]),
        "",
        "No metric on the silos' records was released with it: measure it on public data.",
        "",
        *LOADING_SECTION,
    ]
    return "\n".join(lines)
