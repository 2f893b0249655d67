"""Per-job key material of a FederatedJob: a CA, the SuperLink's certificate, SuperNode keys.

Every FederatedJob gets its own certificate authority (so a certificate issued for one job is
worthless to another, and deleting the job retires the CA), a serving certificate for its
SuperLink whose subject alternative names are the DNS names of the ``{job}-superlink`` Service,
and one ECDSA key pair per SuperNode for Flower's SuperNode authentication (OpenSSH encoding, as
``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read them).

All of a job's material is generated in one pass (:func:`generate_key_material`) and stored in
one Secret, written once and never read back: every pod mounts only the keys it needs, by name
(:func:`supernode_private_key`, :func:`supernode_public_key`). Generation does no I/O: it needs
only randomness from ``cryptography`` and the clock passed in. It is not deterministic, so
``decide`` never calls it; the handler generates the material at its edge while the Secret is not
known to exist and hands it to ``decide`` to create (see
:mod:`ppml_operator.reconcile.federated`).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_VALIDITY = timedelta(days=30)
"""How long the job's CA and SuperLink certificate are valid (longer than any federation)."""

CLOCK_SKEW = timedelta(minutes=5)
"""How far before ``now`` the certificates become valid (tolerates clock skew between pods)."""

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
AUTH_PRIVATE_FILE = "auth.key"
"""Where a SuperNode finds its own private key inside its auth volume."""


def supernode_private_key(client: str) -> str:
    """Return the Secret key holding one SuperNode's private key (OpenSSH)."""
    return f"supernode-{client}.key"


def supernode_public_key(client: str) -> str:
    """Return the Secret key holding one SuperNode's public key (one OpenSSH line)."""
    return f"supernode-{client}.pub"


@dataclass(frozen=True)
class ServingBundle:
    """PEM-encoded CA certificate and the SuperLink's certificate and private key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def secret_data(self) -> dict[str, str]:
        """Return the Secret ``data`` (base64) holding the bundle."""
        return {
            CA_FILE: _b64(self.ca_pem),
            CERT_FILE: _b64(self.cert_pem),
            KEY_FILE: _b64(self.key_pem),
        }


@dataclass(frozen=True)
class AuthKeyPair:
    """A SuperNode's authentication key pair, OpenSSH-encoded."""

    private_openssh: bytes
    public_openssh: bytes


@dataclass(frozen=True)
class KeyMaterial:
    """Everything secret of one federation, generated together and stored in one Secret.

    Attributes
    ----------
    serving
        The job's CA and the SuperLink's certificate and key; None when TLS is off.
    supernodes
        ``(client name, its authentication key pair)`` per silo, in spec order; empty when
        SuperNode authentication is off.

    """

    serving: ServingBundle | None = None
    supernodes: tuple[tuple[str, AuthKeyPair], ...] = ()

    def secret_data(self) -> dict[str, str]:
        """Return the Secret ``data`` (base64): CA, SuperLink pair, each SuperNode's pair."""
        data = self.serving.secret_data() if self.serving is not None else {}
        for client, keys in self.supernodes:
            data[supernode_private_key(client)] = _b64(keys.private_openssh)
            data[supernode_public_key(client)] = _b64(keys.public_openssh)
        return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def service_dns_names(service: str, namespace: str) -> list[str]:
    """Return every name a pod may dial the Service by (the certificate's SANs).

    Parameters
    ----------
    service
        The Service's name.
    namespace
        Its namespace.

    Returns
    -------
    list of str
        ``svc``, ``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.cluster.local``.

    """
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1",)
"""Also in the SuperLink's certificate: inside its pod, Flower's SuperExec and ServerApp dial the
SuperLink's ServerAppIo API on 127.0.0.1, over the same TLS port as everybody else."""


def issue_serving_bundle(job_name: str, dns_names: list[str], now: datetime) -> ServingBundle:
    """Create a CA for one job and sign a serving certificate for its SuperLink.

    Parameters
    ----------
    job_name
        Names the CA (``ppml-operator federation {job_name} CA``).
    dns_names
        The SuperLink certificate's DNS subject alternative names (the first is its common
        name); ``localhost`` and ``127.0.0.1`` are added for the processes inside its pod.
    now
        The clock: the certificates are valid from ``now - CLOCK_SKEW`` for ``CERT_VALIDITY``.

    Returns
    -------
    ServingBundle
        PEM-encoded CA certificate, SuperLink certificate and SuperLink key (PKCS#8).

    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"ppml-operator federation {job_name} CA"[:64])]
    )
    start, end = now - CLOCK_SKEW, now + CERT_VALIDITY
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0][:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in (*dns_names, *LOOPBACK_NAMES)]
                + [x509.IPAddress(ipaddress.ip_address(a)) for a in LOOPBACK_ADDRESSES]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServingBundle(
        ca_pem=ca_cert.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def generate_auth_key_pair() -> AuthKeyPair:
    """Generate a SuperNode authentication key pair (ECDSA P-384, OpenSSH encoding).

    Returns
    -------
    AuthKeyPair
        The private key (OpenSSH PEM) and the public key (one ``ecdsa-sha2-nistp384`` line).

    """
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return AuthKeyPair(private_openssh=private, public_openssh=public + b"\n")


def generate_key_material(
    job_name: str,
    dns_names: list[str] | None,
    clients: Sequence[str],
    now: datetime,
) -> KeyMaterial:
    """Generate all of one federation's key material in one pass.

    Parameters
    ----------
    job_name
        Names the CA.
    dns_names
        The SuperLink certificate's DNS names; None when TLS is off (no CA, no certificate).
    clients
        The silos that get an authentication key pair (empty when authentication is off).
    now
        The clock, for the certificates' validity.

    Returns
    -------
    KeyMaterial
        Consistent by construction: the certificate is signed by this CA, and the public keys
        are those of these private keys.

    """
    serving = issue_serving_bundle(job_name, dns_names, now) if dns_names is not None else None
    return KeyMaterial(
        serving=serving,
        supernodes=tuple((c, generate_auth_key_pair()) for c in clients),
    )
