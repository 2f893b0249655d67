"""Names, roles and paths shared by everything rendered for a FederatedJob.

Deterministic names from the job's and the silos' names (``{job}-superlink``,
``{job}-supernode-{client}``, ...), the ``app.kubernetes.io/component`` of each role, where the
roles find their files, and what the budgets paid for (:class:`FederationPaid`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ppml_operator.api.errors import InvalidSpecError
from ppml_operator.api.v1alpha1 import FederatedJob
from ppml_operator.api.v1alpha1.federated import FederatedClient, FederatedData
from ppml_operator.render import tls
from ppml_operator.render.common import child_base, client_datasets, exec_namespace, truncate_name
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
        out[f"tlsSecret/{client}"] = truncate_name(job_name, f"tls-{client}", 253)
    return out


def owner_namespaces(job: Obj) -> list[str]:
    """Return the data owners' namespaces the silos run in (sorted; empty for inline data)."""
    return sorted({str(o["namespace"]) for o in client_datasets(job).values()})


def namespaces(job: Obj) -> tuple[str, ...]:
    """Return every namespace the federation's children live in, the server side's first."""
    server = exec_namespace(job)
    return (server, *[ns for ns in owner_namespaces(job) if ns != server])


def client_data(fj: FederatedJob, client: FederatedClient, index: int = 0) -> FederatedData:
    """Return a silo's data: inline, or its PrivateDataset's as ``reconcile/dataset.py`` resolved.

    Raises
    ------
    InvalidSpecError
        For a datasetRef client that was not resolved.

    """
    if client.data is not None:
        return client.data
    owner = client_datasets({"metadata": fj.metadata}).get(client.name)
    if owner is None:
        raise InvalidSpecError(f"spec.clients[{index}].datasetRef",
                               "the PrivateDataset was not resolved")
    return FederatedData.model_validate(owner["data"])


def client_namespace(job: Obj, client: str) -> str:
    """Return where a silo's SuperNode runs: its dataset's namespace, or the job's children's."""
    owner = client_datasets(job).get(client)
    return str(owner["namespace"]) if owner else exec_namespace(job)


def across_owners(job: Obj) -> bool:
    """Return whether the federation's silos are data owners (clients name PrivateDatasets)."""
    return bool(client_datasets(job))


def client_names(fj: FederatedJob) -> list[str]:
    """Return the silos' names, in spec order."""
    return [c.name for c in fj.spec.clients]


def superlink_host(job: Obj) -> str:
    """Return the SuperLink Service's DNS name (a name in its certificate)."""
    return f"{names(child_base(job))['service']}.{exec_namespace(job)}.svc.cluster.local"


def superlink_address(job: Obj) -> str:
    """Return ``host:port`` of the SuperLink's Fleet API, which the SuperNodes dial."""
    return f"{superlink_host(job)}:{rc.SUPERLINK_PORT}"


def control_address(job: Obj) -> str:
    """Return ``host:port`` of the SuperLink's Control API, which only the submitter dials."""
    return f"{superlink_host(job)}:{rc.SUPERLINK_CONTROL_PORT}"


def superlink_dns_names(job: Obj) -> list[str]:
    """Return the SuperLink certificate's subject alternative names."""
    return tls.service_dns_names(names(child_base(job))["service"], exec_namespace(job))
