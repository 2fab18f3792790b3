"""A real Kubernetes control plane for the tests: etcd and kube-apiserver (and kwok) as processes.

The binaries come from ``hack/build-controlplane.sh`` (built from Go modules, cached outside the
repository). Everything listens on 127.0.0.1 with ports chosen at start; the PKI (a CA, the API
server's serving certificate, an admin client certificate, the service-account signing key) is made
here with ``cryptography``. Authorization is ``Node,RBAC`` and TokenRequest works (the API server
signs service-account tokens itself), so the chart's own ServiceAccounts can be used as identities
without a controller-manager.

What a cluster would do that this one does not: there is no controller-manager (no namespace
deletion, garbage collection, default ServiceAccounts: :meth:`ControlPlane.namespace` creates the
``default`` one), no scheduler (bind pods with ``spec.nodeName``) and no kubelet (kwok plays the
kubelets of the Nodes it manages). Nothing here imports gpunuma: the tests drive the product
through its commands, the chart and HTTP, as a user would.

Service traffic: the API server calls an admission webhook's Service at
``https://<service>.<namespace>.svc:<port>``, which no DNS or network here resolves. The API server
runs with ``HTTPS_PROXY`` pointing at :class:`ServiceProxy`, a CONNECT proxy in the test process
that maps such ``host:port`` targets to local ports; the API server still verifies the webhook's
certificate for ``<service>.<namespace>.svc`` through the tunnel.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.connectproxy import ServiceProxy

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = "hack/build-controlplane.sh"
READY_TIMEOUT = 120.0  # seconds: a busy 2-core machine starts kube-apiserver in 10-40 s
BINARIES = ("etcd", "kube-apiserver")


def binaries_dir() -> Path:
    """Where hack/build-controlplane.sh puts the binaries (the same rule as the script)."""
    explicit = os.environ.get("GPUNUMA_CONTROLPLANE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gpunuma" / "controlplane"


def kubectl_path() -> str:
    """kubectl of the API server's own release (built by the script), else the one on PATH."""
    import shutil

    built = binaries_dir() / "kubectl"
    if os.access(built, os.X_OK):
        return str(built)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError(f"no kubectl in {binaries_dir()} or on PATH: run {BUILD_SCRIPT}")
    return found


def missing_binaries(names: Iterable[str]) -> list[str]:
    return [name for name in names if not os.access(binaries_dir() / name, os.X_OK)]


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the kernel's pick). A process that loses the race to
    another one fails to bind, and its start is retried with new ports."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return cert, key


class CertificateAuthority:
    """A throwaway CA: serving and client certificates, ECDSA P-256, valid for a day."""

    def __init__(self, common_name: str = "gpunuma-test-ca") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, organizations: Sequence[str] = (),
              hosts: Sequence[str] = (), client: bool = False) -> KeyPair:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes)).issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        )


def service_account_keys(directory: Path) -> tuple[Path, Path]:
    """The key pair the API server signs service-account tokens with (private) and checks them
    with (public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "sa.key", directory / "sa.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


# ---------------------------------------------------------------------------------------------
# processes


@dataclass
class Process:
    """A child process with its output in a log file; stopped by its PID."""

    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=dict(self.env or os.environ),
                                          start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the PID, SIGKILL after ``timeout``; the process alone, nothing by name."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


# ---------------------------------------------------------------------------------------------
# the control plane


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver, and what a test needs to talk to it."""

    directory: Path
    server: str = ""
    ca: CertificateAuthority = field(default_factory=CertificateAuthority)
    proxy: ServiceProxy | None = None
    processes: list[Process] = field(default_factory=list)
    start_seconds: float = 0.0

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit.log"

    def audit_events(self, username: str) -> list[dict[str, Any]]:
        """The API server's audit events (ResponseComplete) of requests made by ``username``."""
        events = []
        with self.audit_log.open() as lines:
            for line in lines:
                event = json.loads(line)
                if event.get("user", {}).get("username") == username \
                        and event.get("stage") == "ResponseComplete":
                    events.append(event)
        return events

    @property
    def admin_kubeconfig(self) -> Path:
        return self.directory / "admin.kubeconfig"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file.write_bytes(self.ca.cert_pem)
        serving = self.ca.issue("kube-apiserver", hosts=(
            "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))
        serving_cert, serving_key = serving.write(self.directory, "apiserver")
        admin_cert, admin_key = self.ca.issue(
            "gpunuma-test-admin", organizations=("system:masters",), client=True
        ).write(self.directory, "admin")
        sa_private, sa_public = service_account_keys(self.directory)
        # Every request with who made it and the answer's status: the RBAC tests read it to show
        # that each component's requests were all allowed.
        audit_policy = self.directory / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived"], "rules": [{"level": "Metadata"}]}))
        self.proxy = ServiceProxy()
        bin_dir = binaries_dir()

        for attempt in range(3):  # a port taken between free_port() and bind: new ports
            etcd_client, etcd_peer, secure_port = free_port(), free_port(), free_port()
            etcd = Process("etcd", [
                str(bin_dir / "etcd"), "--name", "default",
                "--data-dir", str(self.directory / f"etcd{attempt}"),
                "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # test data: durability costs seconds per test on a busy disk
                "--log-level", "warn",
            ], self.directory / "etcd.log").start()
            self.processes.append(etcd)
            environment = dict(os.environ)
            environment.update(HTTPS_PROXY=self.proxy.url, https_proxy=self.proxy.url,
                               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
            apiserver = Process("kube-apiserver", [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={secure_port}",
                f"--tls-cert-file={serving_cert}", f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_public}",
                f"--service-account-signing-key-file={sa_private}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                f"--cert-dir={self.directory / 'certs'}",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}", f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",  # written before the answer: tests read it at once
                "--v=1",
            ], self.directory / "kube-apiserver.log", env=environment).start()
            self.processes.append(apiserver)
            self.server = f"https://127.0.0.1:{secure_port}"
            self.write_kubeconfig(self.admin_kubeconfig, user={
                "client-certificate": str(admin_cert), "client-key": str(admin_key)})
            if self._wait_ready(apiserver, etcd):
                self.start_seconds = time.monotonic() - started
                return
            for process in (apiserver, etcd):
                process.stop()
            if "address already in use" not in (apiserver.tail() + etcd.tail()):
                break
        raise RuntimeError(
            f"kube-apiserver did not become ready within {READY_TIMEOUT:.0f} s.\n"
            f"--- kube-apiserver log ---\n{apiserver.tail()}\n--- etcd log ---\n{etcd.tail()}")

    def _wait_ready(self, apiserver: Process, etcd: Process) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not apiserver.alive() or not etcd.alive():
                return False
            try:
                if self.request("GET", "/readyz", raw=True) == "ok":
                    return True
            except (ApiError, OSError):
                pass
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.proxy is not None:
            self.proxy.close()

    # --- clients -----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(self.directory / "admin.crt", self.directory / "admin.key")
        return context

    def request(self, method: str, path: str, body: Any = None, *, raw: bool = False,
                content_type: str = "application/json", token: str | None = None) -> Any:
        """One API call as the admin (or as the bearer of ``token``): the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (https to the test's server)
            self.server + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
            context = ssl.create_default_context(cafile=str(self.ca_file))
        else:
            context = self._ssl_context()
        for attempt in range(30):
            try:
                with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310
                    text = response.read().decode()
                    break
            except urllib.error.HTTPError as error:
                # 429 while a new CRD's storage initialises ("storage is (re)initializing"), as
                # every client retries it; anything else is the answer.
                if error.code == 429 and attempt < 29:
                    time.sleep(float(error.headers.get("Retry-After") or 1))
                    continue
                raise ApiError(error.code, error.read().decode(errors="replace")) from None
        return text if raw else json.loads(text)

    def write_kubeconfig(self, path: Path, *, user: Mapping[str, str]) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server,
                "certificate-authority-data": base64.b64encode(self.ca.cert_pem).decode()}}],
            "users": [{"name": "user", "user": dict(user)}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def token(self, namespace: str, service_account: str, *, seconds: int = 3600,
              pod: Mapping[str, Any] | None = None) -> str:
        """A token for a ServiceAccount, minted by the API server (TokenRequest); bound to ``pod``
        (a Pod object as stored) when given, like the token the kubelet mounts into a pod: the API
        server then names the pod's node in the token's user info."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if pod is not None:
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod",
                                      "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}
        answer = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        token: str = answer["status"]["token"]
        return token

    def kubeconfig_for(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount ``namespace/service_account``."""
        path = self.directory / f"sa-{namespace}-{service_account}.kubeconfig"
        return self.write_kubeconfig(path, user={"token": self.token(namespace, service_account)})

    def kubectl(self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server (as the admin unless ``kubeconfig`` says otherwise)."""
        result = subprocess.run(
            [kubectl_path(), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def apply(self, documents: Iterable[Mapping[str, Any]], *, kubeconfig: Path | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl apply --server-side`` of these documents (the server validates everything)."""
        text = yaml.safe_dump_all([dict(doc) for doc in documents])
        return self.kubectl("apply", "--server-side", "--force-conflicts",
                            "--field-manager=gpunuma-tests", "-f", "-",
                            kubeconfig=kubeconfig, stdin=text, check=check)

    def helm(self, *args: str, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The helm binary built by hack/build-controlplane.sh, as the admin, with its caches in
        this control plane's directory (never the developer's ~/.config/helm)."""
        home = self.directory / "helm"
        env = dict(os.environ, HELM_CACHE_HOME=str(home / "cache"),
                   HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"),
                   KUBECONFIG=str(self.admin_kubeconfig))
        result = subprocess.run([str(binaries_dir() / "helm"), *args], capture_output=True,
                                text=True, env=env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def namespace(self, name: str, labels: Mapping[str, str] | None = None) -> str:
        """Create a namespace with its ``default`` ServiceAccount (no controller-manager makes it
        here, and the ServiceAccount admission plugin refuses pods without it)."""
        self.apply([
            {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": name, "labels": dict(labels or {})}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "default", "namespace": name}},
        ])
        return name

    def wait_for(self, what: str, condition: Any, timeout: float = 30.0,
                 interval: float = 0.2) -> Any:
        """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = condition()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
