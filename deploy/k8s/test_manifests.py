"""Offline checks of the Kubernetes manifests in deploy/k8s.

Both overlays are built with `kubectl kustomize`; every object of a
built-in kind must pass `kubernetes-validate --strict` for Kubernetes
K8S_VERSION; every operator object must match the vendored schema of the
CRD version it names (crds/), unknown fields refused; and the properties
docs/scaling.md and the issue promise are asserted on what the overlays
build, not on the files: probes, security context, termination grace
against the services' own drain, autoscaling within the partitions,
secrets out of the manifests, each service's network policy.

Run by scripts/k8s-check.sh (which installs the pinned Python packages);
scripts/test.sh runs that.
"""

import base64
import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KUBECTL = os.environ.get("KUBECTL", "kubectl")
K8S_VERSION = "1.32.0"
OVERLAYS = ("production", "single-node")

# The five services and their ports, as docker-compose.yml has them.
SERVICES = {
    "concert": 8081,
    "queue": 8082,
    "reservation": 8083,
    "member-balance": 8084,
    "payment": 8085,
}
HTTP_SCALED = {"concert", "queue"}
LAG_SCALED = {"reservation", "member-balance", "payment"}

# Containers not built by this project whose image writes to its own root
# file system (said where each is declared).
WRITABLE_ROOT = {("kafka", "kafka")}

OPERATOR_SCHEMAS = {
    ("kafka.strimzi.io/v1", "Kafka"): "kafka.strimzi.io_kafkas_v1.json",
    ("kafka.strimzi.io/v1", "KafkaNodePool"): "kafka.strimzi.io_kafkanodepools_v1.json",
    ("kafka.strimzi.io/v1", "KafkaTopic"): "kafka.strimzi.io_kafkatopics_v1.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_clusters_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects_v1alpha1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors_v1.json",
}

BUILT = {}


def kubectl_missing_message():
    return (
        f"{KUBECTL!r} was not found. These checks build the overlays with kubectl's "
        "kustomize (kubectl 1.27 or newer; this project's machine image has "
        "/usr/bin/kubectl 1.32). Install kubectl from your distribution or the "
        "Kubernetes project's package repository, or set KUBECTL=/path/to/kubectl."
    )


def build(overlay):
    result = subprocess.run(
        [KUBECTL, "kustomize", str(HERE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def setUpModule():
    if shutil.which(KUBECTL) is None:
        raise RuntimeError(kubectl_missing_message())
    for overlay in OVERLAYS:
        BUILT[overlay] = build(overlay)


def objects(overlay, kind=None):
    return [o for o in BUILT[overlay] if kind is None or o["kind"] == kind]


def one(overlay, kind, name):
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"{overlay}: {len(found)} {kind} named {name}")
    return found[0]


def is_built_in(obj):
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    return "." not in group or group.endswith(".k8s.io")


def pod_templates(overlay):
    """(owner kind, owner name, pod spec, pod labels) of every workload."""
    for kind in ("Deployment", "StatefulSet", "Job"):
        for obj in objects(overlay, kind):
            template = obj["spec"]["template"]
            yield kind, obj["metadata"]["name"], template["spec"], template["metadata"].get("labels", {})


def container(overlay, service):
    spec = one(overlay, "Deployment", service)["spec"]["template"]["spec"]
    [main] = [c for c in spec["containers"] if c["name"] == service]
    return spec, main


def env_of(overlay, service):
    """The service's environment: its ConfigMap's entries, then its own."""
    spec, main = container(overlay, service)
    env = {}
    for source in main.get("envFrom", []):
        config_map = one(overlay, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for var in main.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def catalog():
    """topic -> (dead-letter topic, consumer groups), from the generated
    event catalog in docs/design.md (checked against shared-events by
    shared-events/tests/catalog.rs)."""
    text = (REPO / "docs" / "design.md").read_text()
    start = text.index("<!-- event-catalog:begin")
    table = {}
    for line in text[start:].splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| event "):
            break
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].endswith(".events`"):
            groups = set(re.findall(r"`([a-z-]+)`", cells[3]))
            table[cells[0].strip("`")] = (cells[2].strip("`"), groups)
    if len(table) != 5:
        raise AssertionError(f"the catalog's topic table was not found in docs/design.md: {table}")
    return table


def consumed_topics(service):
    return {topic for topic, (_, groups) in catalog().items() if service in groups}


def drain_seconds():
    """How long a stopping service may take (runtime's own bounds): HTTP
    shutdown, then background tasks."""
    server = (REPO / "runtime/src/http/server.rs").read_text()
    service = (REPO / "runtime/src/service.rs").read_text()
    http = re.search(r"\.shutdown_timeout\((\d+)\)", server)
    tasks = re.search(r"pub async fn stop\(mut self\)[\s\S]*?Duration::from_secs\((\d+)\)", service)
    if not http or not tasks:
        raise AssertionError("the drain bounds were not found in runtime/src (http/server.rs, service.rs)")
    return int(http.group(1)) + int(tasks.group(1))


def default_pool_size():
    config = (REPO / "runtime/src/config.rs").read_text()
    return int(re.search(r"\[database\][^\[]*?pool_size = (\d+)", config).group(1))


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_label_sets(overlay):
    """The labels of every pod the build leads to, including the
    operators' pods where the manifests set their labels."""
    for kind, name, _, labels in pod_templates(overlay):
        yield f"{kind}/{name}", labels
    for pool in objects(overlay, "KafkaNodePool"):
        labels = pool["spec"].get("template", {}).get("pod", {}).get("metadata", {}).get("labels", {})
        yield f"KafkaNodePool/{pool['metadata']['name']}", labels
    for cluster in objects(overlay, "Cluster"):
        labels = dict(cluster["spec"].get("inheritedMetadata", {}).get("labels", {}))
        labels["cnpg.io/cluster"] = cluster["metadata"]["name"]
        yield f"Cluster/{cluster['metadata']['name']}", labels


def strict(schema):
    """The schema with unknown fields refused wherever it lists the known
    ones, as kubectl's strict field validation would."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def operator_validator(api_version, kind):
    document = json.loads((HERE / "crds" / OPERATOR_SCHEMAS[(api_version, kind)]).read_text())
    schema = strict(document["openAPIV3Schema"])
    # The CRD's schema leaves metadata open; the API server checks it.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def kubernetes_validate(docs):
    """Runs the kubernetes-validate CLI on the objects; returns (exit code,
    output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump_all(docs, file)
        path = file.name
    try:
        cli = Path(sys.executable).parent / "kubernetes-validate"
        result = subprocess.run(
            [str(cli), "--strict", "-k", K8S_VERSION, path],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode, result.stdout + result.stderr
    finally:
        os.unlink(path)


class Build(unittest.TestCase):
    def test_both_overlays_build_into_distinct_objects(self):
        for overlay in OVERLAYS:
            keys = [(o["kind"], o["metadata"]["name"]) for o in BUILT[overlay]]
            self.assertGreater(len(keys), 20, overlay)
            self.assertEqual(len(keys), len(set(keys)), f"{overlay}: an object twice")

    def test_everything_but_the_namespace_is_in_the_ticketing_namespace(self):
        for overlay in OVERLAYS:
            for obj in BUILT[overlay]:
                if obj["kind"] == "Namespace":
                    self.assertEqual(obj["metadata"]["name"], "ticketing")
                else:
                    self.assertEqual(obj["metadata"].get("namespace"), "ticketing", f"{overlay}: {obj['kind']} {obj['metadata']['name']}")


class BuiltInSchemas(unittest.TestCase):
    def test_every_built_in_object_passes_kubernetes_validate_strict(self):
        for overlay in OVERLAYS:
            docs = [o for o in BUILT[overlay] if is_built_in(o)]
            code, output = kubernetes_validate(docs)
            self.assertEqual(code, 0, f"{overlay}:\n{output}")
            passed = len(re.findall(r"passed for resource", output))
            self.assertEqual(passed, len(docs), f"{overlay}: not every object was validated:\n{output}")

    def test_the_strict_check_refuses_an_unknown_field(self):
        deployment = copy.deepcopy(one("production", "Deployment", "payment"))
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
        code, output = kubernetes_validate([deployment])
        self.assertNotEqual(code, 0, output)

    def test_only_the_vendored_operator_kinds_are_used(self):
        for overlay in OVERLAYS:
            for obj in BUILT[overlay]:
                if not is_built_in(obj):
                    self.assertIn((obj["apiVersion"], obj["kind"]), OPERATOR_SCHEMAS, overlay)


class OperatorSchemas(unittest.TestCase):
    def test_operator_objects_match_the_crd_versions_they_name(self):
        seen = set()
        for overlay in OVERLAYS:
            for obj in BUILT[overlay]:
                if is_built_in(obj):
                    continue
                key = (obj["apiVersion"], obj["kind"])
                seen.add(key)
                errors = [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in operator_validator(*key).iter_errors(obj)
                ]
                self.assertEqual(errors, [], f"{overlay}: {obj['kind']} {obj['metadata']['name']}")
        self.assertEqual(seen, set(OPERATOR_SCHEMAS), "a vendored schema no object uses, or the reverse")

    def test_an_unknown_or_misspelt_operator_field_is_refused(self):
        kafka = copy.deepcopy(one("production", "Kafka", "ticketing"))
        kafka["spec"]["kafka"]["listener"] = kafka["spec"]["kafka"].pop("listeners")
        self.assertFalse(operator_validator("kafka.strimzi.io/v1", "Kafka").is_valid(kafka))
        cluster = copy.deepcopy(one("production", "Cluster", "payment-db"))
        cluster["spec"]["postgresql"]["synchronous"]["numbr"] = 1
        self.assertFalse(operator_validator("postgresql.cnpg.io/v1", "Cluster").is_valid(cluster))
        scaled = copy.deepcopy(one("production", "ScaledObject", "payment"))
        scaled["spec"]["maxReplicas"] = 3
        self.assertFalse(operator_validator("keda.sh/v1alpha1", "ScaledObject").is_valid(scaled))


class ServiceDeployments(unittest.TestCase):
    def test_each_service_runs_its_own_command_on_its_port(self):
        for overlay in OVERLAYS:
            for service, port in SERVICES.items():
                _, main = container(overlay, service)
                self.assertEqual(main["args"], ["serve", service])
                self.assertEqual(main["ports"], [{"name": "http", "containerPort": port, "protocol": "TCP"}])
                self.assertEqual(env_of(overlay, service)["APP__HTTP__PORT"], str(port))
                svc = one(overlay, "Service", service)
                self.assertEqual(svc["spec"]["selector"], {"app.kubernetes.io/name": service})
                self.assertEqual([(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]], [(port, "http")])

    def test_probes_ask_the_health_endpoints(self):
        for overlay in OVERLAYS:
            for service in SERVICES:
                _, main = container(overlay, service)
                self.assertEqual(main["livenessProbe"]["httpGet"], {"path": "/health/live", "port": "http"})
                self.assertEqual(main["readinessProbe"]["httpGet"], {"path": "/health/ready", "port": "http"})
                self.assertEqual(main["startupProbe"]["httpGet"]["path"], "/health/live")

    def test_termination_grace_outlasts_the_pre_stop_wait_and_the_drain(self):
        drain = drain_seconds()
        for overlay in OVERLAYS:
            for service in SERVICES:
                spec, main = container(overlay, service)
                pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
                self.assertGreater(
                    spec["terminationGracePeriodSeconds"], pre_stop + drain,
                    f"{overlay}/{service}: SIGKILL would cut the drain short",
                )

    def test_rolling_updates_start_the_new_instance_first(self):
        for overlay in OVERLAYS:
            for service in SERVICES:
                strategy = one(overlay, "Deployment", service)["spec"]["strategy"]
                self.assertEqual(strategy["type"], "RollingUpdate")
                self.assertEqual(strategy["rollingUpdate"]["maxUnavailable"], 0)

    def test_resources_are_requested_and_bounded(self):
        for overlay in OVERLAYS:
            for _, name, spec, _ in pod_templates(overlay):
                for c in spec["containers"]:
                    resources = c.get("resources", {})
                    for what in ("cpu", "memory"):
                        self.assertIn(what, resources.get("requests", {}), f"{overlay}: {name}/{c['name']}")
                    self.assertIn("memory", resources.get("limits", {}), f"{overlay}: {name}/{c['name']}")
        for service in SERVICES:
            _, main = container("production", service)
            self.assertEqual(main["resources"]["requests"]["cpu"], "1", "production: an instance is a core")

    def test_every_pod_meets_the_restricted_pod_security_standard(self):
        for overlay in OVERLAYS:
            namespace = one(overlay, "Namespace", "ticketing")
            self.assertEqual(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted")
            for kind, name, spec, _ in pod_templates(overlay):
                where = f"{overlay}: {kind} {name}"
                pod = spec.get("securityContext", {})
                self.assertFalse(spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"), where)
                for volume in spec.get("volumes", []):
                    allowed = {"name", "secret", "configMap", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI"}
                    self.assertLessEqual(set(volume), allowed, where)
                for c in spec["containers"] + spec.get("initContainers", []):
                    sc = c.get("securityContext", {})
                    self.assertTrue(sc.get("runAsNonRoot", pod.get("runAsNonRoot")), where)
                    self.assertNotEqual(sc.get("runAsUser", pod.get("runAsUser")), 0, where)
                    self.assertIs(sc.get("allowPrivilegeEscalation"), False, where)
                    self.assertEqual(sc.get("capabilities", {}).get("drop"), ["ALL"], where)
                    self.assertNotIn("add", sc.get("capabilities", {}), where)
                    seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
                    self.assertEqual(seccomp.get("type"), "RuntimeDefault", where)
                    read_only = sc.get("readOnlyRootFilesystem")
                    if (name, c["name"]) in WRITABLE_ROOT:
                        self.assertIs(read_only, False, f"{where}: listed as writable, so say so")
                    else:
                        self.assertIs(read_only, True, f"{where}: a read-only root file system")
                self.assertIs(spec.get("automountServiceAccountToken"), False, f"{where}: needs no API access")

    def test_each_service_has_a_disruption_budget_that_lets_a_drain_proceed(self):
        for overlay in OVERLAYS:
            budgets = objects(overlay, "PodDisruptionBudget")
            for service in SERVICES:
                labels = one(overlay, "Deployment", service)["spec"]["template"]["metadata"]["labels"]
                [budget] = [b for b in budgets if selects(b["spec"]["selector"], labels)]
                self.assertEqual(budget["spec"].get("maxUnavailable"), 1, f"{overlay}/{service}")

    def test_production_runs_a_released_image(self):
        version = re.search(r'\[workspace\.package\][^\[]*?version = "([^"]+)"', (REPO / "Cargo.toml").read_text()).group(1)
        for service in SERVICES:
            _, main = container("production", service)
            # A registry may be named in front; the tag is the release's.
            self.assertRegex(main["image"], rf"^([^:]+/)?ticketing:{re.escape(version)}$")

    def test_every_app_variable_names_a_setting_the_code_has(self):
        sources = "".join(
            p.read_text()
            for pattern in ("runtime/src/**/*.rs", "services/*/src/**/*.rs", "services/*/defaults.toml")
            for p in REPO.glob(pattern)
        )
        for overlay in OVERLAYS:
            for service in SERVICES:
                for name in env_of(overlay, service):
                    if not name.startswith("APP__"):
                        continue
                    key = name.removesuffix("_FILE").split("__")[-1].lower()
                    self.assertRegex(sources, rf"\b{key}\b\s*[:=]", f"{overlay}/{service}: {name}")


class Secrets(unittest.TestCase):
    SECRET_LOOKING = [
        re.compile(r"postgres(ql)?://[^/\s:@]+:[^@\s]+@"),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        re.compile(r"\b[0-9a-f]{32,}\b"),
        re.compile(r"\b[A-Za-z0-9+/]{40,}={0,2}"),
        re.compile(r'"d"\s*:'),  # a private JWK
    ]

    def strings(self, node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from self.strings(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from self.strings(value, f"{path}/{i}")
        elif isinstance(node, str):
            yield path, node

    def test_no_secret_object_or_secret_value_is_in_any_manifest(self):
        dashboard = (REPO / "deploy/grafana/dashboards/ticketing.json").read_text()
        for overlay in OVERLAYS:
            self.assertEqual(objects(overlay, "Secret"), [], overlay)
            for obj in BUILT[overlay]:
                for path, value in self.strings(obj):
                    if value == dashboard or path == "/metadata/name":
                        continue
                    for pattern in self.SECRET_LOOKING:
                        self.assertIsNone(pattern.search(value), f"{overlay}: {obj['kind']} {obj['metadata']['name']} {path}")

    def test_sensitive_settings_are_read_from_files(self):
        sensitive = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL")
        for overlay in OVERLAYS:
            for service in SERVICES:
                for name, value in env_of(overlay, service).items():
                    if sensitive.search(name):
                        self.assertTrue(name.endswith("_FILE"), f"{overlay}/{service}: {name}")
                        self.assertTrue(value.startswith("/run/secrets/"), f"{overlay}/{service}: {name}")

    def mounted_secrets(self, overlay, service):
        spec, main = container(overlay, service)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounted = {}
        for mount in main["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "secret" in volume:
                keys = [i["path"] for i in volume["secret"].get("items", [])]
                mounted[volume["secret"]["secretName"]] = (mount["mountPath"], keys)
        return mounted

    def test_each_service_mounts_only_its_own_keys_and_database_credentials(self):
        for overlay in OVERLAYS:
            for service in SERVICES:
                mounted = self.mounted_secrets(overlay, service)
                self.assertEqual(set(mounted), {f"{service}-keys", f"{service}-db-app"}, f"{overlay}/{service}")
                path, items = mounted[f"{service}-db-app"]
                self.assertEqual(items, ["uri"], "the URL alone, not the operator's other keys")
                self.assertEqual(env_of(overlay, service)["DATABASE_URL_FILE"], f"{path}/uri")
                signing = env_of(overlay, service).get("APP__QUEUE__PASS_SIGNING_KEY_FILE")
                self.assertEqual(signing is not None, service == "queue", "only the queue signs passes")

    def test_production_database_credentials_are_the_operators_for_the_services_own_cluster(self):
        for service in SERVICES:
            role = "ticketing_" + service.replace("-", "_")
            cluster = one("production", "Cluster", f"{service}-db")
            # CloudNativePG names the owner's Secret <cluster>-app.
            self.assertIn(f"{cluster['metadata']['name']}-app", self.mounted_secrets("production", service))
            self.assertEqual(cluster["spec"]["bootstrap"]["initdb"], {"database": role, "owner": role})
            self.assertNotIn("secret", cluster["spec"]["bootstrap"]["initdb"], "the operator makes the password")

    def run_secrets_script(self, args):
        """secrets.sh with a stand-in ticketctl (the files `ticketctl
        secrets` writes) and kubectl's client-side dry run; returns the
        Secrets it would apply."""
        work = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, work)
        applied = work / "applied.yaml"
        fake_ticketctl = work / "ticketctl"
        fake_ticketctl.write_text(
            "#!/bin/sh\n"
            "set -e\n"
            '[ "$1" = secrets ] || exit 64\n'
            'd=$2\n'
            "for s in concert queue reservation member-balance payment; do\n"
            '  mkdir -p "$d/$s"\n'
            '  for f in database-url pass-public-key member-jwks.json admin-key; do echo "$s-$f" > "$d/$s/$f"; done\n'
            "done\n"
            'echo q > "$d/queue/pass-signing-key"\n'
            'mkdir -p "$d/console" && echo console-admin-key > "$d/console/admin-key"\n'
            'mkdir -p "$d/postgres"\n'
            'echo p > "$d/postgres/postgres-password"\n'
            "for r in concert queue reservation member_balance payment; do echo p > \"$d/postgres/ticketing_$r.password\"; done\n"
        )
        fake_kubectl = work / "kubectl"
        fake_kubectl.write_text(
            "#!/bin/sh\n"
            'for a in "$@"; do if [ "$a" = apply ]; then { cat; echo ---; } >> "' + str(applied) + '"; exit 0; fi; done\n'
            'exec "' + shutil.which(KUBECTL) + '" "$@"\n'
        )
        for stub in (fake_ticketctl, fake_kubectl):
            stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
        result = subprocess.run(
            ["bash", str(HERE / "secrets.sh"), *args, str(work / "secrets")],
            env={**os.environ, "TICKETCTL": str(fake_ticketctl), "KUBECTL": str(fake_kubectl)},
            capture_output=True,
            text=True,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        docs = [d for d in yaml.safe_load_all(applied.read_text()) if d]
        return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}

    def test_the_console_runs_alone_with_the_admin_key_and_the_services_urls(self):
        for overlay in OVERLAYS:
            deployment = one(overlay, "Deployment", "console")
            self.assertEqual(deployment["spec"]["replicas"], 1, "its sessions are in its memory")
            spec = deployment["spec"]["template"]["spec"]
            [main] = spec["containers"]
            self.assertEqual(main["args"], ["console", "--host", "0.0.0.0", "--port", "8088"])
            self.assertEqual(main["ports"][0]["containerPort"], 8088)
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertEqual(main[probe]["httpGet"]["path"], "/sign-in", probe)
            env = {v["name"]: v.get("value") for v in main["env"]}
            self.assertEqual(env["TICKETCTL_DATA_DIR"], "/run/secrets/ticketing")
            for service, port in SERVICES.items():
                variable = service.replace("-", "_").upper() + "_URL"
                self.assertEqual(env[variable], f"http://{service}:{port}")
            secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
            self.assertEqual(secrets, {"console-keys"}, "the admin key, nothing else")
            one(overlay, "Service", "console")
        made = self.run_secrets_script([])
        self.assertEqual(set(made["console-keys"]["data"]), {"admin-key"})

    def test_the_secrets_script_reads_the_files_ticketctl_secrets_writes(self):
        source = (REPO / "tools/ticketctl/src/secrets.rs").read_text()
        for name in ("database-url", "pass-public-key", "member-jwks.json", "admin-key", "pass-signing-key", "postgres-password"):
            self.assertIn(f'"{name}"', source)
        self.assertIn('"postgres"', source)
        self.assertIn('format!("{role}.password")', source)

    def test_the_secrets_script_makes_every_secret_a_pod_mounts_with_the_keys_it_reads(self):
        made_by_operator = {f"{c['metadata']['name']}-app" for c in objects("production", "Cluster")}
        for overlay, args in (("production", []), ("single-node", ["--single-node"])):
            made = self.run_secrets_script(args)
            needed = {}
            for _, name, spec, _ in pod_templates(overlay):
                volumes = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
                for secret in volumes.values():
                    needed.setdefault(secret["secretName"], set()).update(i["key"] for i in secret.get("items", []))
                for c in spec["containers"]:
                    for mount in c.get("volumeMounts", []):
                        secret = volumes.get(mount["name"])
                        if secret is None or secret.get("items"):
                            continue
                        # The whole Secret is mounted: the files the env names in it.
                        for var in c.get("env", []):
                            if (var.get("value") or "").startswith(mount["mountPath"] + "/"):
                                needed[secret["secretName"]].add(var["value"].rsplit("/", 1)[-1])
            for secret, keys in needed.items():
                if overlay == "production" and secret in made_by_operator:
                    self.assertNotIn(secret, made, "the operator's Secret is not overwritten")
                    continue
                self.assertIn(secret, made, f"{overlay}: nobody makes {secret}")
                self.assertLessEqual(keys, set(made[secret]["data"]), f"{overlay}: {secret}")
            self.assertEqual(set(made) - set(needed), set(), f"{overlay}: made but never mounted")
        postgres = self.run_secrets_script(["--single-node"])["postgres"]
        self.assertEqual(
            set(postgres["data"]),
            {"postgres-password"} | {f"ticketing_{s.replace('-', '_')}.password" for s in SERVICES},
        )
        self.assertEqual(base64.b64decode(postgres["data"]["postgres-password"]).strip(), b"p")


class Scaling(unittest.TestCase):
    def autoscalers(self):
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in objects("production", "HorizontalPodAutoscaler")}
        scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in objects("production", "ScaledObject")}
        return hpas, scaled

    def partitions(self, topic):
        [kafka_topic] = [t for t in objects("production", "KafkaTopic") if t["spec"]["topicName"] == topic]
        return kafka_topic["spec"]["partitions"]

    def test_http_services_scale_on_cpu_and_consumers_on_their_lag(self):
        hpas, scaled = self.autoscalers()
        self.assertEqual(set(hpas), HTTP_SCALED)
        self.assertEqual(set(scaled), LAG_SCALED)
        for service, hpa in hpas.items():
            [metric] = hpa["spec"]["metrics"]
            self.assertEqual(metric["resource"]["name"], "cpu")
        for service, obj in scaled.items():
            triggers = obj["spec"]["triggers"]
            self.assertEqual({t["type"] for t in triggers}, {"kafka"})
            self.assertEqual({t["metadata"]["topic"] for t in triggers}, consumed_topics(service), service)
            for trigger in triggers:
                meta = trigger["metadata"]
                self.assertEqual(meta["consumerGroup"], service, "the group is named after the service")
                self.assertEqual(meta["allowIdleConsumers"], "false")
                self.assertEqual(meta["offsetResetPolicy"], "earliest", "as the consumers' auto.offset.reset")
                self.assertEqual(meta["bootstrapServers"], "ticketing-kafka-bootstrap.ticketing.svc:9092")

    def test_never_more_instances_than_partitions(self):
        hpas, scaled = self.autoscalers()
        for service in SERVICES:
            if service in hpas:
                low, high = hpas[service]["spec"]["minReplicas"], hpas[service]["spec"]["maxReplicas"]
            else:
                low, high = scaled[service]["spec"]["minReplicaCount"], scaled[service]["spec"]["maxReplicaCount"]
            self.assertGreaterEqual(low, 2, f"{service}: one instance is no budget for a disruption")
            for topic in consumed_topics(service):
                self.assertLessEqual(high, self.partitions(topic), f"{service} on {topic}")
            self.assertNotIn("replicas", one("production", "Deployment", service)["spec"], "the autoscaler owns it")
        for service in SERVICES:
            replicas = one("single-node", "Deployment", service)["spec"]["replicas"]
            self.assertLessEqual(replicas, int(env_of("single-node", service)["APP__KAFKA__PARTITIONS"]))

    def test_each_database_takes_every_instance_pool(self):
        hpas, scaled = self.autoscalers()
        for service in SERVICES:
            high = hpas[service]["spec"]["maxReplicas"] if service in hpas else scaled[service]["spec"]["maxReplicaCount"]
            surge = one("production", "Deployment", service)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
            pool = int(env_of("production", service).get("APP__DATABASE__POOL_SIZE", default_pool_size()))
            cluster = one("production", "Cluster", f"{service}-db")
            allowed = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
            # CloudNativePG's own connections (superuser, replication, the
            # instance manager) need a few more.
            self.assertGreaterEqual(allowed, (high + surge) * pool + 10, service)


class KafkaAndDatabases(unittest.TestCase):
    def test_kafka_is_kraft_with_three_controllers_and_three_brokers(self):
        pools = {p["metadata"]["name"]: p["spec"] for p in objects("production", "KafkaNodePool")}
        roles = sorted((tuple(p["roles"]), p["replicas"]) for p in pools.values())
        self.assertEqual(roles, [(("broker",), 3), (("controller",), 3)])
        config = one("production", "Kafka", "ticketing")["spec"]["kafka"]["config"]
        self.assertEqual(config["default.replication.factor"], 3)
        self.assertEqual(config["min.insync.replicas"], 2)
        self.assertEqual(config["offsets.topic.replication.factor"], 3)
        self.assertIs(config["auto.create.topics.enable"], False)

    def test_every_event_and_dead_letter_topic_is_a_replicated_kafka_topic(self):
        expected = set()
        for topic, (dead_letters, _) in catalog().items():
            expected |= {topic, dead_letters}
        topics = {t["spec"]["topicName"]: t["spec"] for t in objects("production", "KafkaTopic")}
        self.assertEqual(set(topics), expected)
        for name, spec in topics.items():
            self.assertEqual(spec["replicas"], 3, name)
            self.assertEqual(spec["config"]["min.insync.replicas"], 2, name)

    def test_the_services_would_create_topics_as_the_kafka_topics_are(self):
        [partitions] = {t["spec"]["partitions"] for t in objects("production", "KafkaTopic")}
        for service in SERVICES:
            env = env_of("production", service)
            self.assertEqual(int(env["APP__KAFKA__PARTITIONS"]), partitions)
            self.assertEqual(env["APP__KAFKA__REPLICATION_FACTOR"], "3")
            self.assertEqual(env["APP__KAFKA__MIN_INSYNC_REPLICAS"], "2")
            self.assertEqual(env["KAFKA_BROKERS"], "ticketing-kafka-bootstrap:9092")
            single = env_of("single-node", service)
            self.assertEqual(single["KAFKA_BROKERS"], "kafka:9092")
            self.assertEqual(single["APP__KAFKA__REPLICATION_FACTOR"], "1", "one broker")

    def test_each_service_has_a_replicated_postgresql_cluster_of_its_own(self):
        clusters = {c["metadata"]["name"]: c["spec"] for c in objects("production", "Cluster")}
        self.assertEqual(set(clusters), {f"{s}-db" for s in SERVICES})
        for name, spec in clusters.items():
            self.assertEqual(spec["instances"], 3, name)
            sync = spec["postgresql"]["synchronous"]
            self.assertGreaterEqual(sync["number"], 1, name)
            self.assertEqual(sync["dataDurability"], "required", name)


class NetworkPolicies(unittest.TestCase):
    def peer(self, peer):
        namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        pods = peer.get("podSelector", {}).get("matchLabels", {})
        return namespace, tuple(sorted(pods.items()))

    def rules(self, policy, direction):
        side = "from" if direction == "ingress" else "to"
        found = set()
        for rule in policy["spec"].get(direction, []):
            for peer in rule[side]:
                for port in rule["ports"]:
                    found.add((self.peer(peer), port["port"], port.get("protocol", "TCP")))
        return found

    def matching_pods(self, overlay, selector_labels):
        return {
            owner
            for owner, labels in pod_label_sets(overlay)
            if all(labels.get(k) == v for k, v in selector_labels)
        }

    def test_each_service_reaches_only_kafka_its_database_the_collector_and_dns(self):
        for overlay in OVERLAYS:
            for service in SERVICES:
                policy = one(overlay, "NetworkPolicy", service)
                self.assertEqual(policy["spec"]["podSelector"]["matchLabels"], {"app.kubernetes.io/name": service})
                self.assertEqual(sorted(policy["spec"]["policyTypes"]), ["Egress", "Ingress"])
                expected = {
                    ((None, (("ticketing/kafka-broker", "true"),)), 9092, "TCP"),
                    ((None, ((f"ticketing/db-{service}", "true"),)), 5432, "TCP"),
                    ((None, (("ticketing/trace-collector", "true"),)), 4318, "TCP"),
                    (("kube-system", (("k8s-app", "kube-dns"),)), 53, "UDP"),
                    (("kube-system", (("k8s-app", "kube-dns"),)), 53, "TCP"),
                }
                if service == "payment":
                    # Completed reservations are delivered to the data platform.
                    expected.add(((None, (("app.kubernetes.io/name", "data-platform"),)), 8090, "TCP"))
                self.assertEqual(self.rules(policy, "egress"), expected, f"{overlay}/{service}")

    def test_each_service_is_reached_only_through_the_ingress_and_by_prometheus(self):
        for overlay in OVERLAYS:
            for service in SERVICES:
                policy = one(overlay, "NetworkPolicy", service)
                expected = {
                    (("ingress-nginx", (("app.kubernetes.io/name", "ingress-nginx"),)), "http", "TCP"),
                    (("monitoring", (("app.kubernetes.io/name", "prometheus"),)), "http", "TCP"),
                    ((None, (("app.kubernetes.io/name", "console"),)), "http", "TCP"),
                }
                self.assertEqual(self.rules(policy, "ingress"), expected, f"{overlay}/{service}")

    def test_the_console_is_reached_by_nobody_and_reaches_kafka_the_services_and_dns(self):
        for overlay in OVERLAYS:
            policy = one(overlay, "NetworkPolicy", "console")
            self.assertEqual(policy["spec"]["podSelector"]["matchLabels"], {"app.kubernetes.io/name": "console"})
            self.assertEqual(sorted(policy["spec"]["policyTypes"]), ["Egress", "Ingress"])
            self.assertEqual(self.rules(policy, "ingress"), set(), f"{overlay}: port-forward only")
            expected = {
                ((None, (("ticketing/kafka-broker", "true"),)), 9092, "TCP"),
                (("kube-system", (("k8s-app", "kube-dns"),)), 53, "UDP"),
                (("kube-system", (("k8s-app", "kube-dns"),)), 53, "TCP"),
            } | {((None, (("app.kubernetes.io/name", s),)), port, "TCP") for s, port in SERVICES.items()}
            self.assertEqual(self.rules(policy, "egress"), expected, overlay)

    def test_the_peers_are_what_they_say_and_a_database_label_is_its_services_alone(self):
        for overlay in OVERLAYS:
            brokers = self.matching_pods(overlay, [("ticketing/kafka-broker", "true")])
            collectors = self.matching_pods(overlay, [("ticketing/trace-collector", "true")])
            self.assertEqual(collectors, {"Deployment/jaeger"}, overlay)
            if overlay == "production":
                self.assertEqual(brokers, {"KafkaNodePool/broker"})
            else:
                self.assertEqual(brokers, {"StatefulSet/kafka"})
            for service in SERVICES:
                databases = self.matching_pods(overlay, [(f"ticketing/db-{service}", "true")])
                if overlay == "production":
                    self.assertEqual(databases, {f"Cluster/{service}-db"}, service)
                else:
                    # One server; the roles keep each service in its own database.
                    self.assertEqual(databases, {"StatefulSet/postgres"}, service)

    def test_kafka_admits_the_services_and_keda_only(self):
        [listener] = one("production", "Kafka", "ticketing")["spec"]["kafka"]["listeners"]
        peers = {self.peer(p) for p in listener["networkPolicyPeers"]}
        self.assertEqual(peers, {(None, (("ticketing/kafka-client", "true"),)), ("keda", (("app", "keda-operator"),))})
        clients = self.matching_pods("production", [("ticketing/kafka-client", "true")])
        self.assertEqual(clients, {f"Deployment/{s}" for s in SERVICES} | {"Deployment/console"})

    def test_the_data_platform_and_the_collector_are_reached_by_whom_they_serve(self):
        for overlay in OVERLAYS:
            platform = one(overlay, "NetworkPolicy", "data-platform")
            self.assertEqual(
                self.rules(platform, "ingress"),
                {((None, (("app.kubernetes.io/name", "payment"),)), "http", "TCP")},
            )
            self.assertEqual(self.rules(platform, "egress"), set())
            collector = one(overlay, "NetworkPolicy", "jaeger")
            self.assertEqual(
                self.rules(collector, "ingress"),
                {((None, (("app.kubernetes.io/component", "service"),)), "otlp-http", "TCP")},
            )
            self.assertEqual(self.rules(collector, "egress"), set())


class IngressAndMonitoring(unittest.TestCase):
    PUBLIC = {
        "/v1/concerts": "concert",
        "/v1/schedules": "concert",
        "/v1/queue": "queue",
        "/v1/reservations": "reservation",
        "/v1/members": "member-balance",
        "/v1/payments": "payment",
    }

    def test_the_ingress_routes_the_public_api_only(self):
        for overlay in OVERLAYS:
            [ingress] = objects(overlay, "Ingress")
            routes = {}
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    routes[path["path"]] = path["backend"]["service"]["name"]
                    self.assertEqual(path["backend"]["service"]["port"], {"name": "http"})
            self.assertEqual(routes, self.PUBLIC, overlay)
            for path in routes:
                self.assertFalse(re.match(r"/(v1/admin|metrics|health|docs)\b|/$", path), path)

    def test_every_service_path_in_the_api_documents_is_routed_or_deliberately_not(self):
        unrouted = re.compile(r"^/(v1/admin/|metrics$|health/)")
        for service in SERVICES:
            document = json.loads((REPO / "docs/api" / f"{service}.json").read_text())
            for path in document["paths"]:
                if unrouted.match(path):
                    continue
                prefix = next((p for p in self.PUBLIC if path == p or path.startswith(p + "/")), None)
                self.assertIsNotNone(prefix, f"{service} serves {path}, which the ingress does not route")
                self.assertEqual(self.PUBLIC[prefix], service, path)

    def test_prometheus_scrapes_every_service_with_its_name_as_the_job(self):
        [monitor] = objects("production", "PodMonitor")
        self.assertEqual(monitor["spec"]["jobLabel"], "app.kubernetes.io/name")
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        self.assertEqual((endpoint["port"], endpoint["path"]), ("http", "/metrics"))
        scraped = {
            name
            for kind, name, spec, labels in pod_templates("production")
            if selects(monitor["spec"]["selector"], labels)
        }
        self.assertEqual(scraped, set(SERVICES))

    def test_the_dashboard_is_compose_dashboard_for_grafanas_sidecar(self):
        config_map = one("production", "ConfigMap", "ticketing-dashboard")
        self.assertEqual(config_map["metadata"]["labels"]["grafana_dashboard"], "1")
        self.assertEqual(
            config_map["data"]["ticketing.json"],
            (REPO / "deploy/grafana/dashboards/ticketing.json").read_text(),
        )


class SingleNode(unittest.TestCase):
    def test_one_broker_and_one_database_server_as_statefulsets(self):
        sets = {s["metadata"]["name"]: s for s in objects("single-node", "StatefulSet")}
        self.assertEqual(set(sets), {"kafka", "postgres"})
        for s in sets.values():
            self.assertEqual(s["spec"]["replicas"], 1)
        self.assertIs(sets["kafka"]["spec"]["template"]["spec"]["enableServiceLinks"], False,
                      "the image would read KAFKA_PORT=tcp://... as a setting")
        for overlay_kind in ("Kafka", "Cluster", "ScaledObject", "HorizontalPodAutoscaler"):
            self.assertEqual(objects("single-node", overlay_kind), [], overlay_kind)

    def test_the_roles_job_runs_composes_roles_files(self):
        job = one("single-node", "Job", "postgres-roles")
        spec = job["spec"]["template"]["spec"]
        [scripts] = [v for v in spec["volumes"] if "configMap" in v]
        config_map = one("single-node", "ConfigMap", scripts["configMap"]["name"])
        for name in ("roles.sh", "roles.sql"):
            self.assertEqual(config_map["data"][name], (REPO / "deploy/postgres" / name).read_text())
        self.assertEqual(spec["containers"][0]["command"], ["sh", "/deploy/roles.sh"])


if __name__ == "__main__":
    unittest.main()
