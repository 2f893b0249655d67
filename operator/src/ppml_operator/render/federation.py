"""Names, roles and paths shared by everything rendered for a FederatedJob.

Deterministic names from the job's and the silos' names (``{job}-superlink``,
``{job}-supernode-{client}``, ...), the ``app.kubernetes.io/component`` of each role, where the
roles find their files, and what the budgets paid for (:class:`FederationPaid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.render import tls
from ppml_operator.render.common import truncate_name
from ppml_operator.render.trainer import Paid
from ppml_runtime import contract as rc

Obj = dict[str, Any]

SUPERLINK = "superlink"
SUPERNODE = "supernode"
SUBMITTER = "submitter"
FEDERATION = "federation"
"""The ``app.kubernetes.io/component`` values of a federation's children."""

ROLE_COMMAND = ("python", "-m", "ppml_runtime")
"""The runtime entry point of the federation's roles (``superlink``, ``supernode``, ``submit``)."""

TLS_DIR = "/etc/ppml-tls"
AUTH_DIR = "/etc/ppml-auth"
PUBLIC_KEYS_DIR = "/etc/ppml-auth-public"
FLWR_HOME = "/tmp/flwr"
KEYS_SECRET_ANNOTATION = "ppml.dev/keys-secret"
"""Set on the FederatedJob, to the name of its key Secret, once that Secret was created.

The operator never reads Secrets back, so this is how a pass knows the keys exist (and need not
be generated again): ``decide`` adds it with a patch that ``act`` applies after the creations."""
SILO_DATA_DIR = "/tmp/silo-data"


@dataclass(frozen=True)
class FederationPaid:
    """What the budgets paid for: the runtime must use exactly these.

    Attributes
    ----------
    central
        Central DP: noise multiplier, client sampling rate, rounds (as ``steps``), delta and
        the epsilon charged; None otherwise.
    clients
        Local DP: ``(client name, its DP-SGD parameters)`` per silo; empty otherwise.

    """

    central: Paid | None = None
    clients: tuple[tuple[str, Paid], ...] = field(default_factory=tuple)


def names(job_name: str, clients: Sequence[str] = ()) -> dict[str, str]:
    """Return the name of each child of the job (``supernode/NAME`` per silo)."""
    out = {
        "serviceAccount": truncate_name(job_name, FEDERATION, 253),
        "configMap": truncate_name(job_name, FEDERATION, 253),
        "tlsSecret": truncate_name(job_name, "tls", 253),
        "service": truncate_name(job_name, SUPERLINK),
        "superlink": truncate_name(job_name, SUPERLINK),
        "submit": truncate_name(job_name, "submit", 52),  # room for the pod name suffix
        "superlinkPolicy": truncate_name(job_name, SUPERLINK, 253),
        "supernodePolicy": truncate_name(job_name, SUPERNODE, 253),
        "submitterPolicy": truncate_name(job_name, SUBMITTER, 253),
    }
    for client in clients:
        out[f"supernode/{client}"] = truncate_name(job_name, f"{SUPERNODE}-{client}")
    return out


def client_names(fj: FederatedJob) -> list[str]:
    """Return the silos' names, in spec order."""
    return [c.name for c in fj.spec.clients]


def superlink_address(job: Obj) -> str:
    """Return ``host:port`` the SuperNodes and the submitter dial (a name in the certificate)."""
    meta = job["metadata"]
    service = names(meta["name"])["service"]
    return f"{service}.{meta['namespace']}.svc.cluster.local:{rc.SUPERLINK_PORT}"


def superlink_dns_names(job: Obj) -> list[str]:
    """Return the SuperLink certificate's subject alternative names."""
    meta = job["metadata"]
    return tls.service_dns_names(names(meta["name"])["service"], meta["namespace"])
