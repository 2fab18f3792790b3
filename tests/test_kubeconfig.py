"""Kubeconfigs read as kubectl reads them, checked against kubectl itself.

Two comparisons with the real kubectl on the same files: what ``kubectl config view --minify
--flatten`` resolves (the context, cluster and user chosen from a merged KUBECONFIG list), and what
reaches a TLS server when kubectl and gpunuma each make a request (the Authorization and
Impersonate headers, the client certificate). Then the exec plugin protocol and the refusals.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from gpunuma.kubeapi import ApiError, Connection, KubeClient, StdlibTransport
from gpunuma.kubeapi.execplugin import ExecPlugin, ExecPluginError
from gpunuma.kubeapi.kubeconfig import Context, KubeconfigError, load, merge, select
from tests.conftest import require_tool
from tests.connectproxy import ServiceProxy
from tests.tlsserver import client_name, serving

EXEC_V1 = "client.authentication.k8s.io/v1"
EXEC_V1BETA1 = "client.authentication.k8s.io/v1beta1"


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", **document}))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubectl_view(environ: dict[str, str], context: str | None = None) -> dict[str, Any]:
    """kubectl's resolution of the chosen context, files inlined as data."""
    argv = [require_tool("kubectl"), "config", "view", "--minify", "--flatten", "--raw", "-o", "json"]
    if context:
        argv += ["--context", context]
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def as_view(found: Context) -> dict[str, Any]:
    """Our resolution in kubectl view's shape, for the fields both show."""

    def data(inline: bytes | None, file: str | None) -> str | None:
        if inline is not None:
            return b64(inline)
        return b64(Path(file).read_bytes()) if file else None

    cluster = {"server": found.server, "tls-server-name": found.tls_server_name,
               "proxy-url": found.proxy_url,
               "insecure-skip-tls-verify": found.insecure_skip_tls_verify or None,
               "certificate-authority-data": data(found.certificate_authority_data,
                                                  found.certificate_authority)}
    extras: dict[str, list[str]] = {}
    for name, value in found.impersonate:
        if name.startswith("Impersonate-Extra-"):
            extras.setdefault(name.removeprefix("Impersonate-Extra-"), []).append(value)
    impersonate = dict(found.impersonate)
    user: dict[str, Any] = {
        "client-certificate-data": data(found.client_certificate_data, found.client_certificate),
        "client-key-data": data(found.client_key_data, found.client_key),
        "token": found.token, "username": found.username, "password": found.password,
        "as": impersonate.get("Impersonate-User"), "as-uid": impersonate.get("Impersonate-Uid"),
        "as-groups": [v for k, v in found.impersonate if k == "Impersonate-Group"] or None,
        "as-user-extra": extras or None,
    }
    if found.exec_plugin:
        plugin = found.exec_plugin
        user["exec"] = {"apiVersion": plugin.api_version, "args": list(plugin.args) or None,
                        "env": [{"name": k, "value": v} for k, v in plugin.env] or None,
                        "interactiveMode": plugin.interactive_mode,
                        "command": os.path.basename(plugin.command)}
    return {"cluster": _present(cluster), "user": _present(user), "namespace": found.namespace}


def from_view(view: dict[str, Any]) -> dict[str, Any]:
    cluster = view["clusters"][0]["cluster"]
    user = dict(view["users"][0]["user"]) if view.get("users") else {}
    user.pop("tokenFile", None)  # shown as written, not resolved: compared on the wire below
    if "exec" in user:
        plugin = user["exec"]
        user["exec"] = {"apiVersion": plugin["apiVersion"], "args": plugin.get("args"),
                        "env": plugin.get("env"), "interactiveMode": plugin.get("interactiveMode"),
                        "command": os.path.basename(plugin["command"])}
    return {"cluster": _present(cluster), "user": _present(user),
            "namespace": view["contexts"][0]["context"].get("namespace", "default")}


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value not in (None, "", False)}


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def kubeconfigs(tmp_path: Path, authority: trustme.CA) -> dict[str, Path]:
    """Two kubeconfig files in different folders, overlapping as real ones do (a laptop's own file
    and one a cloud CLI wrote), with relative file names in both."""
    leaf = authority.issue_cert("alice")
    (tmp_path / "home" / "certs").mkdir(parents=True)
    (tmp_path / "cloud").mkdir()
    authority.cert_pem.write_to_path(str(tmp_path / "cloud" / "ca.crt"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "home" / "certs" / "alice.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "home" / "certs" / "alice.key"))
    home = write(tmp_path / "home" / "config", {
        "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {
            "server": "https://127.0.0.1:6443", "certificate-authority-data":
            b64(authority.cert_pem.bytes()), "tls-server-name": "api.lab.internal"}}],
        "users": [
            {"name": "alice", "user": {"client-certificate": "certs/alice.crt",
                                       "client-key": "certs/alice.key"}},
            {"name": "shared", "user": {"token": "home-token", "as": "bob",
                                        "as-groups": ["ml", "ops"],
                                        "as-user-extra": {"scopes": ["view", "edit"]}}},
        ],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "alice",
                                                  "namespace": "training"}},
                     {"name": "cloud-as-bob", "context": {"cluster": "cloud", "user": "shared"}}],
    })
    cloud = write(tmp_path / "cloud" / "config", {
        "current-context": "cloud",
        "clusters": [{"name": "cloud", "cluster": {
            "server": "https://cloud.example:443/", "certificate-authority": "ca.crt",
            "proxy-url": "http://proxy.example:3128"}},
            {"name": "lab", "cluster": {"server": "https://not-this-one:6443"}}],
        "users": [
            {"name": "shared", "user": {"token": "cloud-token"}},
            {"name": "cloud-user", "user": {"exec": {
                "apiVersion": EXEC_V1BETA1, "command": "./bin/get-token", "args": ["--region", "x"],
                "env": [{"name": "PROFILE", "value": "ml"}]}}},
            {"name": "insecure", "user": {"username": "admin", "password": "secret"}},
        ],
        "contexts": [{"name": "cloud", "context": {"cluster": "cloud", "user": "cloud-user",
                                                    "namespace": "inference"}},
                     {"name": "lab", "context": {"cluster": "cloud", "user": "insecure"}},
                     {"name": "basic", "context": {"cluster": "cloud", "user": "insecure"}}],
    })
    return {"home": home, "cloud": cloud}


@pytest.mark.parametrize("context", [None, "cloud-as-bob", "cloud", "basic"])
def test_a_merged_kubeconfig_list_resolves_as_kubectl_resolves_it(
    kubeconfigs: dict[str, Path], tmp_path: Path, context: str | None,
) -> None:
    listed = os.pathsep.join([str(kubeconfigs["home"]), str(tmp_path / "missing"),
                              str(kubeconfigs["cloud"])])
    environ = {**os.environ, "KUBECONFIG": listed}
    ours = load(None, context, environ)
    assert as_view(ours) == from_view(kubectl_view(environ, context))


def test_the_merge_keeps_the_first_definition_and_resolves_names_against_its_file(
    kubeconfigs: dict[str, Path],
) -> None:
    environ = {"KUBECONFIG": os.pathsep.join(str(kubeconfigs[k]) for k in ("home", "cloud"))}
    current = load(None, None, environ)
    assert (current.name, current.server, current.namespace) == (
        "lab", "https://127.0.0.1:6443", "training")  # home's lab: current-context, cluster, context
    assert current.client_certificate == str(kubeconfigs["home"].parent / "certs" / "alice.crt")
    cloud = load(None, "cloud", environ)
    assert cloud.server == "https://cloud.example:443/"  # as written; the connection drops the /
    assert cloud.certificate_authority == str(kubeconfigs["cloud"].parent / "ca.crt")
    assert cloud.exec_plugin is not None
    assert cloud.exec_plugin.command == str(kubeconfigs["cloud"].parent / "bin" / "get-token")
    assert cloud.exec_plugin.interactive_mode == "IfAvailable"  # v1beta1's default
    assert load(None, "cloud-as-bob", environ).token == "home-token"  # noqa: S105


# --- on the wire: kubectl and gpunuma against the same server -----------------------------------

@pytest.fixture
async def recorder(authority: trustme.CA) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTPS server, certified for ``api.lab.internal`` only, that records who asked."""
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({
            "authorization": request.headers.get("Authorization"),
            "impersonate": sorted((k.lower(), v) for k, v in request.headers.items()
                                  if k.lower().startswith("impersonate-")),  # names: any case
            "client": client_name(request),
        })
        return web.json_response({"kind": "Node", "metadata": {"name": "n1"}})

    app = web.Application()
    app.router.add_get("/api/v1/nodes/n1", record)
    async with serving(app, authority, "api.lab.internal") as port:
        yield f"https://127.0.0.1:{port}", seen


PLUGIN = """#!/bin/sh
# An exec credential plugin: a token, or with CERT set a client certificate and key.
printf '%s' "$KUBERNETES_EXEC_INFO" > "$0.request"
if [ -n "$CERT" ]; then
  printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"clientCertificateData":%s,\
"clientKeyData":%s}}' "$API" "$(cat "$CERT")" "$(cat "$KEY")"
else
  printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"exec-%s"}}' "$API" "$1"
fi
"""


def users(tmp_path: Path, authority: trustme.CA) -> dict[str, dict[str, Any]]:
    """One kubeconfig user for each way to authenticate."""
    leaf = authority.issue_cert("carol", common_name="carol")
    (tmp_path / "tokens").mkdir(exist_ok=True)
    (tmp_path / "tokens" / "t").write_text("file-token\n")
    plugin = tmp_path / "bin" / "plugin"
    plugin.parent.mkdir(exist_ok=True)
    plugin.write_text(PLUGIN)
    plugin.chmod(0o755)
    (tmp_path / "cert.json").write_text(json.dumps(leaf.cert_chain_pems[0].bytes().decode()))
    (tmp_path / "key.json").write_text(json.dumps(leaf.private_key_pem.bytes().decode()))
    exec_env = [{"name": "API", "value": EXEC_V1}]
    return {
        "token": {"token": "plain-token"},
        "token-file": {"tokenFile": "tokens/t"},
        "basic": {"username": "admin", "password": "s3cret"},
        "certificate": {"client-certificate-data": b64(leaf.cert_chain_pems[0].bytes()),
                        "client-key-data": b64(leaf.private_key_pem.bytes())},
        "impersonating": {"token": "plain-token", "as": "dave", "as-groups": ["ml"],
                          "as-uid": "1234",
                          "as-user-extra": {"team": ["gpu"], "example.com/scope 1": ["a", "b"]}},
        "exec-token": {"exec": {"apiVersion": EXEC_V1, "command": "./bin/plugin", "args": ["x"],
                                "env": exec_env, "interactiveMode": "Never"}},
        "exec-certificate": {"exec": {
            "apiVersion": EXEC_V1, "command": "./bin/plugin", "interactiveMode": "Never",
            "env": [*exec_env, {"name": "CERT", "value": str(tmp_path / "cert.json")},
                    {"name": "KEY", "value": str(tmp_path / "key.json")}]}},
    }


@pytest.mark.parametrize("user", ["token", "token-file", "basic", "certificate", "impersonating",
                                  "exec-token", "exec-certificate"])
@pytest.mark.parametrize("transport", ["aiohttp", "stdlib"])
async def test_gpunuma_sends_the_credentials_kubectl_sends(
    recorder: tuple[str, list[dict[str, Any]]], authority: trustme.CA, tmp_path: Path, user: str,
    transport: str,
) -> None:
    server, seen = recorder
    config = write(tmp_path / "kubeconfig", {
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {
            "server": server, "certificate-authority-data": b64(authority.cert_pem.bytes()),
            "tls-server-name": "api.lab.internal"}}],
        "users": [{"name": "u", "user": users(tmp_path, authority)[user]}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    })
    kubectl = await asyncio.create_subprocess_exec(  # the server runs on this event loop
        require_tool("kubectl"), "--kubeconfig", str(config), "get", "--raw", "/api/v1/nodes/n1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(kubectl.communicate(), timeout=60)
    assert kubectl.returncode == 0, stderr.decode()
    client = KubeClient(Connection.from_kubeconfig(config),
                        transport=StdlibTransport() if transport == "stdlib" else None)
    try:
        assert await client.get("/api/v1/nodes/n1") == {"kind": "Node", "metadata": {"name": "n1"}}
    finally:
        await client.close()
    by_kubectl, by_gpunuma = seen
    assert by_gpunuma == by_kubectl
    assert by_gpunuma["authorization"] or by_gpunuma["client"]  # it did authenticate


@pytest.mark.parametrize("transport", ["aiohttp", "stdlib"])
async def test_a_proxy_url_is_gone_through_as_kubectl_goes_through_it(
    recorder: tuple[str, list[dict[str, Any]]], authority: trustme.CA, tmp_path: Path, transport: str,
) -> None:
    """The server's name resolves nowhere but at the proxy, as behind a bastion."""
    server, seen = recorder
    proxy = ServiceProxy()
    proxy.route("api.lab.internal:6443", int(server.rsplit(":", 1)[1]))
    config = write(tmp_path / "kubeconfig", one(user={"token": "via-proxy"}, cluster={
        "server": "https://api.lab.internal:6443", "proxy-url": proxy.url,
        "certificate-authority-data": b64(authority.cert_pem.bytes())}))
    try:
        kubectl = await asyncio.create_subprocess_exec(
            require_tool("kubectl"), "--kubeconfig", str(config), "get", "--raw", "/api/v1/nodes/n1",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(kubectl.communicate(), timeout=60)
        assert kubectl.returncode == 0, stderr.decode()
        tunnels = proxy.connections
        client = KubeClient(Connection.from_kubeconfig(config),
                            transport=StdlibTransport() if transport == "stdlib" else None)
        try:
            assert await client.get("/api/v1/nodes/n1") is not None
        finally:
            await client.close()
    finally:
        proxy.close()
    assert tunnels >= 1
    assert proxy.connections == tunnels + 1
    assert seen[0] == seen[1] == {"authorization": "Bearer via-proxy", "impersonate": [],
                                  "client": None}


# --- the exec plugin protocol --------------------------------------------------------------------

def test_an_exec_plugin_gets_the_request_and_the_cluster_when_it_asks(tmp_path: Path) -> None:
    users(tmp_path, trustme.CA())
    config = write(tmp_path / "kubeconfig", {
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {
            "server": "https://k8s.example", "certificate-authority-data": b64(b"PEM"),
            "extensions": [{"name": "client.authentication.k8s.io/exec",
                            "extension": {"audience": "gpu"}}]}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": EXEC_V1BETA1, "command": "./bin/plugin", "args": ["y"],
            "provideClusterInfo": True, "env": [{"name": "API", "value": EXEC_V1BETA1}]}}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    })
    plugin = load(config).exec_plugin
    assert plugin is not None
    credential = plugin.run()
    assert credential.token == "exec-y"  # noqa: S105
    assert credential.expires is None
    request = json.loads((tmp_path / "bin" / "plugin.request").read_text())
    assert request == {"apiVersion": EXEC_V1BETA1, "kind": "ExecCredential", "spec": {
        "interactive": False, "cluster": {"server": "https://k8s.example",
                                          "certificate-authority-data": b64(b"PEM"),
                                          "config": {"audience": "gpu"}}}}


def test_an_expired_exec_token_runs_the_plugin_again(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    script = tmp_path / "plugin"
    script.write_text(f"""#!/bin/sh
n=$(($(cat {counter} 2>/dev/null || echo 0) + 1)); echo $n > {counter}
printf '{{"apiVersion":"{EXEC_V1}","kind":"ExecCredential","status":{{"token":"t%s",\
"expirationTimestamp":"%s"}}}}' $n "$STAMP"
""")
    script.chmod(0o755)

    def connection(stamp: str) -> Connection:
        config = write(tmp_path / "kubeconfig", {
            "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example"}}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": EXEC_V1, "command": str(script), "interactiveMode": "Never",
                "env": [{"name": "STAMP", "value": stamp}]}}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        })
        return Connection.from_kubeconfig(config)

    lasting = connection("2999-01-01T00:00:00Z")
    assert [lasting.authorization() for _ in range(2)] == ["Bearer t1", "Bearer t1"]
    expired = connection("2001-01-01T00:00:00Z")
    assert [expired.authorization() for _ in range(2)] == ["Bearer t3", "Bearer t4"]


@pytest.mark.parametrize(("answer", "message"), [
    ("exit 3", "exited with status 3"),
    ("echo not-json", "did not print an ExecCredential"),
    (f"""echo '{{"apiVersion":"{EXEC_V1BETA1}","kind":"ExecCredential","status":{{"token":"t"}}}}'""",
     f"answered apiVersion '{EXEC_V1BETA1}'; the kubeconfig asks for {EXEC_V1}"),
    (f"""echo '{{"apiVersion":"{EXEC_V1}","kind":"ExecCredential","status":{{}}}}'""",
     "neither a token nor a certificate"),
    (f"""echo '{{"apiVersion":"{EXEC_V1}","kind":"ExecCredential","status":{{"clientKeyData":"k"}}}}'""",
     "a client certificate or key, not both"),
    (f"""echo '{{"apiVersion":"{EXEC_V1}","kind":"ExecCredential","status":{{"token":"t",\
"expirationTimestamp":"2030-01-01T00:00:00"}}}}'""",
     "answered expirationTimestamp: '2030-01-01T00:00:00' has no timezone"),
])
def test_a_failing_exec_plugin_is_named_with_what_it_did(tmp_path: Path, answer: str, message: str,
                                                         ) -> None:
    script = tmp_path / "plugin"
    script.write_text(f"#!/bin/sh\n{answer}\n")
    script.chmod(0o755)
    plugin = ExecPlugin(user="ci", api_version=EXEC_V1, command=str(script), interactive_mode="Never")
    with pytest.raises(ExecPluginError, match="exec credential plugin of kubeconfig user 'ci'") as error:
        plugin.run()
    assert message in str(error.value)


def test_a_missing_exec_plugin_shows_its_install_hint(tmp_path: Path) -> None:
    plugin = ExecPlugin(user="eks", api_version=EXEC_V1, command="no-such-aws-iam-authenticator",
                        interactive_mode="Never", install_hint="Install it: https://example/aws")
    with pytest.raises(ExecPluginError, match=r"not installed or not on PATH\. Install it: https://"):
        plugin.run()


# --- refusals ------------------------------------------------------------------------------------

def one(user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None,
        **document: Any) -> dict[str, Any]:
    return {
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://k8s.example"}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        **document,
    }


@pytest.mark.parametrize(("document", "message"), [
    (one(**{"current-context": ""}), "has no current-context: pass --context"),
    (one(contexts=[{"name": "c", "context": {"cluster": "gone", "user": "u"}}]),
     "names cluster 'gone', which no file"),
    (one(contexts=[{"name": "c", "context": {"cluster": "c", "user": "gone"}}]),
     "names user 'gone', which no file"),
    (one(cluster={"certificate-authority-data": "x"}), "cluster 'c' in .* has no server"),
    (one(cluster={"server": "https://k", "certificate-authority-data": "not base64!"}),
     "certificate-authority-data is not base64"),
    (one(cluster={"server": 6443}), "server must be a string, not 6443"),
    (one(cluster={"server": "https://k", "insecure-skip-tls-verify": "false"}),
     "insecure-skip-tls-verify must be true or false, not 'false'"),
    (one(user={"auth-provider": {"name": "gcp"}}), "auth-provider 'gcp'.*exec credential plugin"),
    (one(user={"client-certificate-data": b64(b"c")}), "client certificate without client-key"),
    (one(user={"token": "t", "username": "u"}), "both a token and a username"),
    (one(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}),
     "exec apiVersion 'client.authentication.k8s.io/v1alpha1' is not one of"),
    (one(user={"exec": {"apiVersion": EXEC_V1, "command": "x"}}),
     "interactiveMode must be one of Never, IfAvailable, Always, not None"),
    (one(cluster={"server": "https://k", "proxy-url": "socks5://p:1080"}),
     "proxy-url 'socks5://p:1080' is not supported"),
    (one(cluster={"server": "https://k", "proxy-url": "https://p:3128"}),
     "proxy-url 'https://p:3128' is not supported; gpunuma goes through http:// proxies"),
    ({"clusters": {"c": {}}}, "clusters must be a list"),
])
def test_an_unusable_kubeconfig_is_refused_with_what_to_fix(
    tmp_path: Path, document: dict[str, Any], message: str,
) -> None:
    with pytest.raises(KubeconfigError, match=message):
        load(write(tmp_path / "kubeconfig", document))


def test_the_context_asked_for_must_exist_and_the_message_lists_those_that_do(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=r"has no context 'prod' \(contexts: c\)"):
        select(merge([(tmp_path / "k", one())]), "prod")


def test_no_kubeconfig_at_all_says_where_it_looked(tmp_path: Path) -> None:
    listed = f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"
    with pytest.raises(KubeconfigError, match="none of the files in KUBECONFIG exists"):
        load(None, None, {"KUBECONFIG": listed})
    with pytest.raises(ApiError, match=f"cannot load kubeconfig {listed}: no kubeconfig to read"):
        Connection.from_kubeconfig(None, None, {"KUBECONFIG": listed})
