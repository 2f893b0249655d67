"""Certificates, keys, tokens and kubeconfigs for devcluster.

One self-signed CA signs the API server's serving certificate and the client certificates of the
admin, the controller-manager, the scheduler and the node agent. The service-account signing key
is a separate RSA key pair. Everything is generated once and reused by later ``up`` runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster.paths import BRIDGE_IP, TOKEN_USERS, Paths, apiserver_url

_VALIDITY = datetime.timedelta(days=3650)

#: Client certificates: file stem -> (common name, organisation or None).
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("devcluster-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "node": ("system:node:devcluster-node", "system:nodes"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}

#: Static token identities: name -> groups.
TOKEN_GROUPS: dict[str, list[str]] = {
    "admin": ["system:masters"],
    "tenant": ["ppml:tenants"],
    "data-owner": ["ppml:data-owners"],
    "viewer": ["ppml:viewers"],
}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = pki / "ca.crt", pki / "ca.key"
    if crt.exists() and key.exists():
        return x509.load_pem_x509_certificate(crt.read_bytes()), _load_key(key)
    k = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("devcluster-ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(k, hashes.SHA256())
    )
    _write_key(key, k)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, k


def _issue(
    pki: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    cn: str,
    org: str | None,
    *,
    server: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> None:
    crt, key = pki / f"{stem}.crt", pki / f"{stem}.key"
    if crt.exists() and key.exists():
        return
    ca_cert, ca_key = ca
    k = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca_cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if dns or ips:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    _write_key(key, k)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _service_account_keys(pki: Path) -> None:
    key = pki / "sa.key"
    if key.exists():
        return
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(key, k)
    (pki / "sa.pub").write_bytes(
        k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _tokens(paths: Paths) -> None:
    paths.tokens.mkdir(parents=True, exist_ok=True)
    rows = []
    for user in TOKEN_USERS:
        f = paths.tokens / user
        if not f.exists():
            f.write_text(secrets.token_hex(24) + "\n")
            f.chmod(0o600)
        groups = ",".join(TOKEN_GROUPS[user])
        rows.append(f'{f.read_text().strip()},{user},uid-{user},"{groups}"')
    (paths.config / "tokens.csv").write_text("\n".join(rows) + "\n")


def write_kubeconfig(path: Path, paths: Paths, user: str, *, token: str | None = None) -> None:
    """Write a kubeconfig for ``user`` (a client certificate stem, or a bearer ``token``).

    Parameters
    ----------
    path
        Where to write it.
    paths
        The state directory (for the CA and client certificates).
    user
        The user name inside the kubeconfig; also the certificate stem when no token is given.
    token
        A bearer token to use instead of a client certificate.

    """
    creds: dict[str, str] = (
        {"token": token}
        if token
        else {
            "client-certificate": str(paths.pki / f"{user}.crt"),
            "client-key": str(paths.pki / f"{user}.key"),
        }
    )
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devcluster",
                "cluster": {
                    "server": apiserver_url(),
                    "certificate-authority": str(paths.pki / "ca.crt"),
                },
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [
            {"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}
        ],
        "current-context": "devcluster",
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)


def ensure_pki(paths: Paths) -> None:
    """Create (once) every certificate, key, token and kubeconfig devcluster needs.

    Parameters
    ----------
    paths
        The state directory to write into.

    """
    for d in (paths.pki, paths.config):
        d.mkdir(parents=True, exist_ok=True)
    paths.pki.chmod(0o700)
    ca = _ca(paths.pki)
    _issue(
        paths.pki, "apiserver", ca, "kube-apiserver", None, server=True,
        dns=(
            "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", BRIDGE_IP, "10.96.0.1"),
    )
    _issue(paths.pki, "kubelet", ca, "system:node:devcluster-node", "system:nodes", server=True,
           dns=("devcluster-node", "localhost"), ips=("127.0.0.1", BRIDGE_IP))
    for stem, (cn, org) in CLIENTS.items():
        _issue(paths.pki, stem, ca, cn, org, server=False)
    _service_account_keys(paths.pki)
    _tokens(paths)
    write_kubeconfig(paths.kubeconfig, paths, "admin")
    for stem in ("controller-manager", "scheduler", "node"):
        write_kubeconfig(paths.config / f"{stem}.kubeconfig", paths, stem)
    for user in TOKEN_USERS:
        write_kubeconfig(paths.config / f"{user}-token.kubeconfig", paths, user,
                         token=paths.token(user))
