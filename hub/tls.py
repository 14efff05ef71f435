"""A throwaway certificate authority and server certificate for the local broker's TLS listener.

Kafka reads both as PEM files (``ssl.keystore.type=PEM``), so no keytool or JKS is involved; clients trust
the CA through ``HUB_SSL_CAFILE``. The certificate names 127.0.0.1 and localhost, which is all a local
broker listens on by default, so hostname verification stays on. A broker whose client listener is on another
local address (``hub broker start --host``) asks for that IP too (``extra_ips``): the certificate then names it
as well, and an existing one that does not is issued again, with a new CA (the CA's key is never kept), so
clients must take the new ``ca.pem``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.credentials import private_dir, write_private

VALID_FOR = dt.timedelta(days=825)


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # the CA certificate: clients' ssl_cafile, brokers' truststore
    keystore: Path  # the server's private key followed by its certificate chain


LOOPBACK = "127.0.0.1"


def _wanted_ips(extra_ips: Iterable[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """127.0.0.1 first, then the extra addresses in order, each once."""
    wanted = [ipaddress.ip_address(LOOPBACK)]
    for ip in map(ipaddress.ip_address, extra_ips):
        if ip not in wanted:
            wanted.append(ip)
    return wanted


def certificate_ips(keystore: Path) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IP addresses the server certificate in ``keystore`` names (empty when it cannot be read)."""
    try:
        certificate = x509.load_pem_x509_certificates(keystore.read_bytes())[0]
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return set()
    return set(names.get_values_for_type(x509.IPAddress))


def ensure_tls_files(directory: Path, extra_ips: Iterable[str] = ()) -> TlsFiles:
    """Create the CA and server certificate once; later starts reuse them so clients keep trusting the CA.

    ``extra_ips``: addresses besides 127.0.0.1 the certificate must name; existing files whose certificate
    lacks one are replaced (new CA and server certificate).
    """
    files = TlsFiles(directory / "ca.pem", directory / "server.pem")
    ips = _wanted_ips(extra_ips)
    if files.ca_file.exists() and files.keystore.exists():
        if len(ips) == 1 or set(ips) <= certificate_ips(files.keystore):
            return files
    private_dir(directory)  # it holds the server's private key
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Task Force Hub local CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), *map(x509.IPAddress, ips)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(files.keystore, key_pem + server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    write_private(files.ca_file, ca_cert.public_bytes(pem))  # not secret, but only its owner hands it out
    return files

