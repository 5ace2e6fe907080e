"""yarn-provisioner against an HTTPS ResourceManager whose certificate a throw-away CA signed.

The real yarn-api-client (requests) verifies the RM's certificate with the CA bundle named by ``yarn_cert_bundle``;
without it, verification (on by default) fails and the launch says so in one line naming the setting to fix.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import BackendUnavailable
from gateway_provisioners.provisioners.yarn import YarnProvisioner

from ...support.kernels import run_code
from .conftest import ENDED_BY_SHUTDOWN, write_yarn_spec
from .rm_emulator import RMServer, RMState, make_workdir

pytestmark = pytest.mark.integration


def _write_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate it signs for 127.0.0.1: (ca.pem, server.pem, server-key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gp-test-yarn-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def ca_bundle(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    ca_file, cert_file, key_file = _write_pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


@pytest.fixture
def tls_rm(ca_bundle: tuple[Path, ssl.SSLContext]) -> Iterator[tuple[RMServer, RMState, Path]]:
    ca_file, context = ca_bundle
    workdir = make_workdir()
    state = RMState(workdir)
    server = RMServer(state, tls=context)
    yield server, state, ca_file
    server.stop()
    state.shutdown()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_ambient_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests would let REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override verification: only the setting counts here."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


async def test_https_rm_with_ca_bundle_executes_code(
    jupyter_path: Path, tls_rm: tuple[RMServer, RMState, Path]
) -> None:
    server, state, ca_file = tls_rm
    assert server.url.startswith("https://127.0.0.1:")
    write_yarn_spec(jupyter_path, "yarn-tls", server.url, yarn_cert_bundle=str(ca_file))
    km = AsyncKernelManager(kernel_name="yarn-tls")
    await km.start_kernel()
    try:
        assert isinstance(km.provisioner, YarnProvisioner) and km.provisioner.kernel is not None
        handle = km.provisioner.kernel.handle
        assert handle is not None
        app_id = str(handle.data["app_id"])
        # The submission went through the HTTPS-only server: new-application, submit, and the poller's queries.
        assert state.count("POST", "/ws/v1/cluster/apps/new-application") == 1
        assert state.count("POST", "/ws/v1/cluster/apps") == 1
        assert state.count("GET", "/ws/v1/cluster/apps") >= 1
        assert server.tls_failures == 0
        content, out = await run_code(km, "print(6 * 7)")
        assert content["status"] == "ok" and out.strip() == "42"
    finally:
        await km.shutdown_kernel(now=True)
    assert state.apps[app_id]["state"] in ENDED_BY_SHUTDOWN
    assert state.count("PUT", f"/ws/v1/cluster/apps/{app_id}/state") >= 1  # the kill went over TLS as well


async def test_https_rm_without_bundle_fails_with_one_clear_line(
    jupyter_path: Path, tls_rm: tuple[RMServer, RMState, Path]
) -> None:
    server, state, _ca_file = tls_rm
    write_yarn_spec(jupyter_path, "yarn-tls-untrusted", server.url)  # verification on (the default), no bundle
    km = AsyncKernelManager(kernel_name="yarn-tls-untrusted")
    with pytest.raises(BackendUnavailable) as caught:
        await km.start_kernel()
    message = str(caught.value)
    assert "\n" not in message
    assert f"the TLS certificate of the YARN ResourceManager {server.url} could not be verified" in message
    assert "certificate verify failed" in message
    assert "GP_YARN_CERT_BUNDLE (yarn_cert_bundle)" in message
    assert server.tls_failures >= 1  # the client hung up in the handshake: it really rejected the certificate
    assert not state.apps, "nothing may be submitted to an RM whose certificate is not trusted"


async def test_missing_bundle_file_is_a_configuration_error(
    jupyter_path: Path, tls_rm: tuple[RMServer, RMState, Path], tmp_path: Path
) -> None:
    server, state, _ca_file = tls_rm
    missing = tmp_path / "no-such-ca.pem"
    write_yarn_spec(jupyter_path, "yarn-tls-missing", server.url, yarn_cert_bundle=str(missing))
    km = AsyncKernelManager(kernel_name="yarn-tls-missing")
    with pytest.raises(Exception) as caught:
        await km.start_kernel()
    message = str(caught.value)
    assert "\n" not in message
    assert "GP_YARN_CERT_BUNDLE (yarn_cert_bundle) names no file" in message and str(missing) in message
    assert state.total_requests() == 0
