"""Checks rendered leadflow manifests: the Kubernetes JSON schemas (strict, offline, with
kubernetes-validate's bundled schemas) and the rules the variants must keep, then the image
build files. Run by scripts/check-k8s.sh, which renders the variants and installs the tools;
prints every problem found and exits non-zero when there is one.

    python3 scripts/check_k8s.py --kubernetes-version 1.30 dev=rendered-dev.yaml ...
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import re
import sys
import tomllib
from pathlib import Path

import yaml
from kubernetes_validate import utils as schemas

# The four services: the name `--service` takes, the gRPC name their health entry carries.
SERVICES = {
    "capture": "leadflow.capture.v1.CaptureService",
    "scoring": "leadflow.scoring.v1.ScoringService",
    "nurturing": "leadflow.nurturing.v1.NurturingService",
    "routing": "leadflow.routing.v1.RoutingService",
}

# Secrets a variant expects the operator to create instead of rendering them.
OPERATOR_SECRETS = {
    "prod": {"leadflow-secrets", "leadflow-tokens", "leadflow-capture-tls"},
}

# Settings that are secrets: they must come from a Secret, never as a literal value.
SECRET_SETTINGS = {
    "LEADFLOW_DATABASE_URL",
    "LEADFLOW_REDIS_URL",
    "LEADFLOW_INGRESS__LINK_KEY",
    "LEADFLOW_INGRESS__PREVIOUS_LINK_KEYS",
    "LEADFLOW_MAIL__SMTP_PASSWORD",
}

# Ports the services' egress must reach: PostgreSQL, Redis, DNS.
POSTGRES_PORT, REDIS_PORT, DNS_PORT = 5432, 6379, 53

NAMESPACED_KINDS_EXEMPT = {"Namespace"}


class Problems:
    """Collects what is wrong, with the variant and object it is about."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def check(self, condition: bool, where: str, message: str) -> bool:
        if not condition:
            self.add(where, message)
        return condition


def name_of(document: dict) -> str:
    return f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects `labels`."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


class Variant:
    """One rendered variant: its documents, indexed by kind and name."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        self.by_kind: dict[str, dict[str, dict]] = {}
        for document in self.documents:
            self.by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document

    def objects(self, kind: str) -> dict[str, dict]:
        return self.by_kind.get(kind, {})

    def pod_templates(self):
        """(object name, pod template) of every workload."""
        for kind in ("Deployment", "StatefulSet", "DaemonSet"):
            for name, workload in self.objects(kind).items():
                yield f"{kind}/{name}", workload["spec"]["template"]
        for name, job in self.objects("Job").items():
            yield f"Job/{name}", job["spec"]["template"]

    def config_value(self, container: dict, variable: str) -> str | None:
        """The value `variable` has in `container`: its env (literal), else its ConfigMaps."""
        for entry in container.get("env") or []:
            if entry["name"] == variable:
                return entry.get("value")
        for source in container.get("envFrom") or []:
            reference = source.get("configMapRef")
            if reference:
                data = self.objects("ConfigMap").get(reference["name"], {}).get("data") or {}
                if variable in data:
                    return data[variable]
        return None


def validate_schemas(variant: Variant, versions: list[str], problems: Problems) -> int:
    """Validates every document strictly against each Kubernetes version's schema; a kind
    without a schema is a problem too, since it would go unchecked."""
    checked = 0
    for document in variant.documents:
        for version in versions:
            where = f"{variant.name} {name_of(document)} (Kubernetes {version})"
            try:
                schemas.validate(document, version, strict=True)
                checked += 1
            except schemas.ValidationError as error:
                path = ".".join(str(item) for item in error.path)
                problems.add(where, f"schema: {path}: {error.message}")
            except schemas.SchemaNotFoundError as error:
                problems.add(where, f"no schema: {error.message}")
    return checked


def check_security(variant: Variant, problems: Problems) -> None:
    """Every pod of every variant, leadflow's and the backends', runs as the restricted Pod
    Security Standard wants, with requests and limits."""
    for where, template in variant.pod_templates():
        where = f"{variant.name} {where}"
        spec = template["spec"]
        pod_security = spec.get("securityContext") or {}
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            at = f"{where} container {container['name']}"
            security = container.get("securityContext") or {}
            run_as_non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            problems.check(run_as_non_root is True, at, "runAsNonRoot is not true")
            user = security.get("runAsUser", pod_security.get("runAsUser"))
            problems.check(
                isinstance(user, int) and user > 0, at, "no numeric non-root runAsUser"
            )
            problems.check(
                security.get("readOnlyRootFilesystem") is True, at, "root filesystem not read-only"
            )
            problems.check(
                security.get("allowPrivilegeEscalation") is False,
                at,
                "allowPrivilegeEscalation is not false",
            )
            drop = (security.get("capabilities") or {}).get("drop") or []
            problems.check("ALL" in drop, at, "capabilities do not drop ALL")
            seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {})
            problems.check(
                seccomp.get("type") == "RuntimeDefault", at, "seccomp profile is not RuntimeDefault"
            )
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    problems.check(
                        resource in (resources.get(bound) or {}),
                        at,
                        f"no {resource} {bound}",
                    )
        problems.check(
            spec.get("automountServiceAccountToken") is False,
            where,
            "the service account token is mounted",
        )


def check_references(variant: Variant, problems: Problems) -> None:
    """Every ConfigMap and Secret a pod or Ingress names is rendered, or is one the operator
    is expected to create; secret settings come from Secrets only."""
    expected = OPERATOR_SECRETS.get(variant.name, set())
    secrets = set(variant.objects("Secret")) | expected
    config_maps = set(variant.objects("ConfigMap"))
    for where, template in variant.pod_templates():
        where = f"{variant.name} {where}"
        spec = template["spec"]
        # (where the reference sits, the key naming the object, its kind, what exists)
        kinds = (
            ("configMap", "name", "ConfigMap", config_maps),
            ("secret", "secretName", "Secret", secrets),
        )
        for volume in spec.get("volumes") or []:
            for field, key, kind, known in kinds:
                if field in volume and volume[field][key] not in known:
                    problems.add(where, f"volume {volume['name']} names a missing {kind}")
        for container in spec["containers"]:
            for source in container.get("envFrom") or []:
                for field, _, kind, known in kinds:
                    reference = source.get(f"{field}Ref")
                    if reference and reference["name"] not in known:
                        problems.add(where, f"envFrom names a missing {kind} {reference['name']}")
            for entry in container.get("env") or []:
                source = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if source:
                    secret = source["name"]
                    if problems.check(
                        secret in secrets, where, f"{entry['name']} names a missing Secret {secret}"
                    ) and secret in variant.objects("Secret") and not source.get("optional"):
                        data = variant.objects("Secret")[secret].get("data") or {}
                        problems.check(
                            source["key"] in data,
                            where,
                            f"{entry['name']}: Secret {secret} has no key {source['key']}",
                        )
                if entry["name"] in SECRET_SETTINGS:
                    problems.check(
                        source is not None,
                        where,
                        f"{entry['name']} is a secret and must come from a Secret",
                    )
    for config_map in config_maps:
        data = variant.objects("ConfigMap")[config_map].get("data") or {}
        for setting in SECRET_SETTINGS & set(data):
            problems.add(
                f"{variant.name} ConfigMap/{config_map}",
                f"{setting} is a secret and must not be in a ConfigMap",
            )
    for name, ingress in variant.objects("Ingress").items():
        for tls in ingress["spec"].get("tls") or []:
            problems.check(
                tls.get("secretName") in secrets,
                f"{variant.name} Ingress/{name}",
                f"TLS names a Secret {tls.get('secretName')} neither rendered nor expected",
            )
    if variant.name in OPERATOR_SECRETS:
        problems.check(
            not variant.objects("Secret"),
            variant.name,
            "renders Secrets, which the operator is to create instead",
        )


def grpc_port(container: dict) -> int | None:
    for port in container.get("ports") or []:
        if port.get("name") == "grpc":
            return port["containerPort"]
    return None


def check_services(variant: Variant, problems: Problems) -> dict[str, dict]:
    """Each of the four services: a Deployment serving it alone with gRPC probes on its named
    health entry, its Services (ClusterIP and headless), ServiceAccount, HPA and PDB."""
    pods = {}
    images = set()
    for service, grpc_name in SERVICES.items():
        name = f"leadflow-{service}"
        where = f"{variant.name} Deployment/{name}"
        deployment = variant.objects("Deployment").get(name)
        if not problems.check(deployment is not None, where, "missing"):
            continue
        spec = deployment["spec"]
        template = spec["template"]
        pod = template["spec"]
        labels = template["metadata"].get("labels") or {}
        pods[service] = template
        problems.check(
            "replicas" not in spec, where, "sets replicas, which its autoscaler owns"
        )
        problems.check(
            selector_matches(spec["selector"], labels), where, "selector misses its own pods"
        )
        problems.check(pod.get("enableServiceLinks") is False, where, "service links are on")
        containers = pod["containers"]
        if not problems.check(len(containers) == 1, where, "not exactly one container"):
            continue
        container = containers[0]
        images.add(container["image"])
        args = container.get("args") or []
        problems.check(
            args[:3] == ["serve", "--service", service], where, f"does not run serve --service {service}"
        )
        port = grpc_port(container)
        if not problems.check(port is not None, where, "no container port named grpc"):
            continue
        problems.check(
            variant.config_value(container, "LEADFLOW_LISTEN") == f"0.0.0.0:{port}",
            where,
            f"LEADFLOW_LISTEN is not 0.0.0.0:{port}",
        )
        for probe_name in ("startupProbe", "readinessProbe"):
            probe = (container.get(probe_name) or {}).get("grpc") or {}
            problems.check(
                probe.get("port") == port and probe.get("service") == grpc_name,
                where,
                f"{probe_name} is not a gRPC probe of {grpc_name} on port {port}",
            )
        liveness = (container.get("livenessProbe") or {}).get("grpc") or {}
        problems.check(liveness.get("port") == port, where, "livenessProbe is not a gRPC probe")
        # Liveness must not follow the dependencies: a restart does not bring a database back.
        problems.check(
            liveness.get("service", "") == "",
            where,
            "livenessProbe names the service entry, which goes NOT_SERVING when PostgreSQL or "
            "Redis is lost and would restart every pod",
        )
        grace_ms = variant.config_value(container, "LEADFLOW_SHUTDOWN_GRACE_MS") or "10000"
        pause = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {})
        needed_s = int(grace_ms) / 1000 + pause.get("seconds", 0)
        termination = pod.get("terminationGracePeriodSeconds", 30)
        problems.check(
            termination > needed_s,
            where,
            f"terminationGracePeriodSeconds {termination} does not exceed the preStop pause "
            f"plus the drain ({needed_s:g} s)",
        )
        for variable in ("LEADFLOW_DATABASE_URL", "LEADFLOW_REDIS_URL"):
            problems.check(
                any(e["name"] == variable for e in container.get("env") or []),
                where,
                f"{variable} is not set",
            )
        if service in ("capture", "nurturing"):
            problems.check(
                any(e["name"] == "LEADFLOW_INGRESS__LINK_KEY" for e in container.get("env") or []),
                where,
                "LEADFLOW_INGRESS__LINK_KEY is not set (the links it signs or checks)",
            )
        if service == "capture":
            http = next(
                (p["containerPort"] for p in container.get("ports") or [] if p.get("name") == "http"),
                None,
            )
            problems.check(
                http is not None
                and variant.config_value(container, "LEADFLOW_INGRESS__LISTEN") == f"0.0.0.0:{http}",
                where,
                "no http port with LEADFLOW_INGRESS__LISTEN=0.0.0.0:PORT",
            )
        if service == "nurturing":
            problems.check(
                bool(variant.config_value(container, "LEADFLOW_INGRESS__PUBLIC_URL")),
                where,
                "LEADFLOW_INGRESS__PUBLIC_URL is not set (nurturing runs without capture)",
            )
            if variant.name == "prod":
                problems.check(
                    bool(variant.config_value(container, "LEADFLOW_MAIL__SMTP_HOST")),
                    where,
                    "no SMTP relay: mail would go to .eml files in an emptyDir",
                )
        check_writable_paths(variant, where, pod, container, problems)
        check_service_account(variant, where, pod, problems)
        check_service_objects(variant, service, labels, port, problems)
    migrate = variant.objects("Job").get("leadflow-migrate")
    if problems.check(migrate is not None, f"{variant.name} Job/leadflow-migrate", "missing"):
        container = migrate["spec"]["template"]["spec"]["containers"][0]
        problems.check(
            (container.get("args") or [])[:1] == ["migrate"],
            f"{variant.name} Job/leadflow-migrate",
            "does not run leadflow migrate",
        )
        images.add(container["image"])
    problems.check(
        len(images) == 1, variant.name, f"the services and the Job use several images: {images}"
    )
    return pods


def check_writable_paths(variant, where, pod, container, problems) -> None:
    """With a read-only root filesystem, whatever the binary writes must be a mounted volume:
    /tmp, and the data directory where one is configured."""
    mounts = {mount["mountPath"] for mount in container.get("volumeMounts") or []}
    problems.check("/tmp" in mounts, where, "/tmp is not a mounted volume")
    data_dir = variant.config_value(container, "LEADFLOW_DATA_DIR")
    if data_dir:
        problems.check(data_dir in mounts, where, f"the data directory {data_dir} is not mounted")
    volumes = {volume["name"] for volume in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        problems.check(mount["name"] in volumes, where, f"mounts a missing volume {mount['name']}")


def check_service_account(variant, where, pod, problems) -> None:
    account_name = pod.get("serviceAccountName")
    account = variant.objects("ServiceAccount").get(account_name)
    if problems.check(account is not None, where, f"service account {account_name} is missing"):
        problems.check(
            account.get("automountServiceAccountToken") is False,
            f"{variant.name} ServiceAccount/{account_name}",
            "mounts its token",
        )


def check_service_objects(variant, service, labels, port, problems) -> None:
    name = f"leadflow-{service}"
    for service_name, headless in ((name, False), (f"{name}-headless", True)):
        where = f"{variant.name} Service/{service_name}"
        found = variant.objects("Service").get(service_name)
        if not problems.check(found is not None, where, "missing"):
            continue
        spec = found["spec"]
        problems.check(
            (spec.get("clusterIP") == "None") == headless,
            where,
            "headless" if not headless else "not headless (clusterIP: None)",
        )
        problems.check(
            selector_matches({"matchLabels": spec.get("selector") or {}}, labels)
            and bool(spec.get("selector")),
            where,
            "selects none of the service's pods",
        )
        problems.check(
            any(
                p.get("name") == "grpc" and p.get("targetPort") in ("grpc", port)
                for p in spec.get("ports") or []
            ),
            where,
            "no port named grpc to the pods' grpc port",
        )
    where = f"{variant.name} HorizontalPodAutoscaler/{name}"
    autoscaler = variant.objects("HorizontalPodAutoscaler").get(name)
    if problems.check(autoscaler is not None, where, "missing"):
        spec = autoscaler["spec"]
        target = spec["scaleTargetRef"]
        problems.check(
            autoscaler["apiVersion"] == "autoscaling/v2", where, "is not autoscaling/v2"
        )
        problems.check(
            target.get("kind") == "Deployment" and target.get("name") == name,
            where,
            "does not scale the service's Deployment",
        )
        problems.check(
            1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"],
            where,
            "minReplicas is not between 1 and maxReplicas",
        )
    where = f"{variant.name} PodDisruptionBudget/{name}"
    budget = variant.objects("PodDisruptionBudget").get(name)
    if problems.check(budget is not None, where, "missing"):
        problems.check(
            selector_matches(budget["spec"].get("selector"), labels),
            where,
            "selects none of the service's pods",
        )


def peer_selected(peer: dict, namespace: dict, labels: dict) -> bool:
    """Whether a NetworkPolicy peer covers a pod with `labels` in the namespace whose labels
    are `namespace`."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer and not selector_matches(peer["namespaceSelector"], namespace):
        return False
    return selector_matches(peer.get("podSelector", {}), labels)


def rule_ports(rule: dict) -> set[int]:
    return {port.get("port") for port in rule.get("ports") or []}


def check_network_policies(variant: Variant, pods: dict[str, dict], problems: Problems) -> None:
    """Default deny, every egress rule with a destination, each service able to reach what
    it needs, and no leadflow service reachable from another but by capture's export."""
    policies = variant.objects("NetworkPolicy")
    namespace_name = next(
        (d["metadata"].get("namespace") for d in variant.documents if d["kind"] == "Deployment"),
        None,
    )
    namespace = {"kubernetes.io/metadata.name": namespace_name}
    namespace.update(
        (variant.objects("Namespace").get(namespace_name, {}).get("metadata") or {}).get("labels")
        or {}
    )
    problems.check(
        any(
            p["spec"].get("podSelector") == {}
            and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies.values()
        ),
        variant.name,
        "no default-deny NetworkPolicy",
    )
    for name, policy in policies.items():
        for rule in policy["spec"].get("egress") or []:
            where = f"{variant.name} NetworkPolicy/{name}"
            problems.check(bool(rule.get("to")), where, "an egress rule with no destination")
            problems.check(bool(rule.get("ports")), where, "an egress rule with no ports")

    def egress_ports(labels: dict) -> set[int]:
        ports: set[int] = set()
        for policy in policies.values():
            if selector_matches(policy["spec"]["podSelector"], labels) or policy["spec"][
                "podSelector"
            ] == {}:
                for rule in policy["spec"].get("egress") or []:
                    ports |= rule_ports(rule)
        return ports

    # The one call between services: capture's data-protection export asks the peers its
    # LEADFLOW_PEERS__<NAME>_URL settings name for their part.
    export_peers: set[str] = set()
    if "capture" in pods:
        capture_container = pods["capture"]["spec"]["containers"][0]
        for peer in ("scoring", "nurturing", "routing"):
            url = variant.config_value(capture_container, f"LEADFLOW_PEERS__{peer.upper()}_URL")
            if url:
                export_peers.add(peer)
                problems.check(
                    re.fullmatch(rf"http://leadflow-{peer}:\d+", url) is not None,
                    f"{variant.name} Deployment/leadflow-capture",
                    f"LEADFLOW_PEERS__{peer.upper()}_URL {url!r} is not http://leadflow-{peer}:PORT",
                )

    def reaches(source_labels: dict, target_labels: dict, port: int) -> bool:
        """Whether some egress rule of the source's policies names the target pod and port."""
        return any(
            selector_matches(policy["spec"]["podSelector"], source_labels)
            and any(
                port in rule_ports(rule)
                and any(peer_selected(peer, namespace, target_labels) for peer in rule.get("to") or [])
                for rule in policy["spec"].get("egress") or []
            )
            for policy in policies.values()
        )

    for service, template in pods.items():
        labels = template["metadata"]["labels"]
        where = f"{variant.name} Deployment/leadflow-{service}"
        reachable = egress_ports(labels)
        for port, what in ((POSTGRES_PORT, "PostgreSQL"), (REDIS_PORT, "Redis"), (DNS_PORT, "DNS")):
            problems.check(port in reachable, where, f"no egress to {what} (port {port})")
        container = template["spec"]["containers"][0]
        endpoint = variant.config_value(container, "OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint:
            match = re.search(r":(\d+)/?$", endpoint)
            otlp_port = int(match.group(1)) if match else 4317
            problems.check(otlp_port in reachable, where, f"no egress to the collector ({endpoint})")
        if service == "nurturing" and variant.config_value(container, "LEADFLOW_MAIL__SMTP_HOST"):
            smtp_port = int(variant.config_value(container, "LEADFLOW_MAIL__SMTP_PORT") or 587)
            problems.check(smtp_port in reachable, where, f"no egress to the SMTP relay ({smtp_port})")
        if service != "nurturing":
            problems.check(
                587 not in reachable, where, "reaches the SMTP relay, which only nurturing needs"
            )
        # Ingress: the gRPC port from outside the suite; from another leadflow service only
        # capture's export, and only to the peers it names.
        port = grpc_port(container)
        for policy_name, policy in policies.items():
            if not selector_matches(policy["spec"]["podSelector"], labels):
                continue
            for rule in policy["spec"].get("ingress") or []:
                for other, other_template in pods.items():
                    if other == "capture" and service in export_peers:
                        continue
                    other_labels = other_template["metadata"]["labels"]
                    problems.check(
                        not any(
                            peer_selected(peer, namespace, other_labels)
                            for peer in rule.get("from") or []
                        ),
                        f"{variant.name} NetworkPolicy/{policy_name}",
                        f"lets {other} reach {service}; the services talk through Redis, "
                        "and only capture's export calls a peer it names",
                    )
        if service in export_peers:
            capture_labels = pods["capture"]["metadata"]["labels"]
            problems.check(
                reaches(capture_labels, labels, port),
                f"{variant.name} Deployment/leadflow-capture",
                f"no egress to {service}'s gRPC port {port}, which its export calls",
            )
            problems.check(
                any(
                    selector_matches(p["spec"]["podSelector"], labels)
                    and any(
                        port in rule_ports(rule)
                        and any(
                            peer_selected(peer, namespace, capture_labels)
                            for peer in rule.get("from") or []
                        )
                        for rule in p["spec"].get("ingress") or []
                    )
                    for p in policies.values()
                ),
                where,
                f"no ingress from capture to its gRPC port {port}, which capture's export calls",
            )
        problems.check(
            any(
                selector_matches(p["spec"]["podSelector"], labels)
                and any(port in rule_ports(rule) for rule in p["spec"].get("ingress") or [])
                for p in policies.values()
            ),
            where,
            f"no ingress to its gRPC port {port}",
        )
    capture = pods.get("capture")
    if capture:
        labels = capture["metadata"]["labels"]
        problems.check(
            any(
                selector_matches(p["spec"]["podSelector"], labels)
                and any(8080 in rule_ports(rule) for rule in p["spec"].get("ingress") or [])
                for p in policies.values()
            ),
            f"{variant.name} Deployment/leadflow-capture",
            "no ingress to its HTTP port from the Ingress controller",
        )
    # In-cluster backends (dev) take their clients' connections.
    for workload_name, template in variant.pod_templates():
        labels = template["metadata"].get("labels") or {}
        for port_name, port in ((f"postgres", POSTGRES_PORT), ("redis", REDIS_PORT)):
            ports = {p.get("containerPort") for c in template["spec"]["containers"] for p in c.get("ports") or []}
            if port in ports and workload_name.startswith("StatefulSet/"):
                problems.check(
                    any(
                        selector_matches(p["spec"]["podSelector"], labels)
                        and any(port in rule_ports(rule) for rule in p["spec"].get("ingress") or [])
                        for p in policies.values()
                    ),
                    f"{variant.name} {workload_name}",
                    f"nothing may reach its {port_name} port",
                )


def check_ingress_and_backends(variant: Variant, problems: Problems) -> None:
    for name, ingress in variant.objects("Ingress").items():
        where = f"{variant.name} Ingress/{name}"
        problems.check(
            ingress["apiVersion"] == "networking.k8s.io/v1", where, "is not networking.k8s.io/v1"
        )
        for rule in ingress["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = path["backend"]["service"]
                service = variant.objects("Service").get(backend["name"])
                if problems.check(service is not None, where, f"backend {backend['name']} missing"):
                    port = backend["port"]
                    problems.check(
                        any(
                            p.get("name") == port.get("name") or p.get("port") == port.get("number")
                            for p in service["spec"]["ports"]
                        ),
                        where,
                        f"backend port {port} is not a port of {backend['name']}",
                    )
        capture = variant.objects("Deployment").get("leadflow-capture")
        if capture:
            public_url = variant.config_value(
                capture["spec"]["template"]["spec"]["containers"][0], "LEADFLOW_INGRESS__PUBLIC_URL"
            ) or ""
            hosts = {rule.get("host") for rule in ingress["spec"].get("rules") or []}
            host = re.sub(r"^https?://([^/:]+).*$", r"\1", public_url)
            problems.check(
                host in hosts,
                where,
                f"LEADFLOW_INGRESS__PUBLIC_URL {public_url!r} points at none of its hosts {hosts}",
            )
            if variant.name == "prod":
                problems.check(public_url.startswith("https://"), where, "public URL is not https")
                tls_hosts = {h for tls in ingress["spec"].get("tls") or [] for h in tls.get("hosts") or []}
                problems.check(host in tls_hosts, where, f"no TLS for {host}")
    for name, statefulset in variant.objects("StatefulSet").items():
        for container in statefulset["spec"]["template"]["spec"]["containers"]:
            if "redis" in container["image"]:
                args = " ".join(container.get("args") or [])
                where = f"{variant.name} StatefulSet/{name}"
                problems.check("--appendonly yes" in args, where, "Redis without AOF")
                problems.check(
                    "--appendfsync everysec" in args, where, "Redis AOF not synced every second"
                )
                problems.check(
                    "--maxmemory-policy noeviction" in args,
                    where,
                    "Redis may evict keys (streams, hot scores) silently",
                )
    for document in variant.documents:
        if document["kind"] in NAMESPACED_KINDS_EXEMPT:
            continue
        problems.check(
            document["metadata"].get("namespace") is not None,
            f"{variant.name} {name_of(document)}",
            "has no namespace",
        )


def check_image_build(root: Path, problems: Problems) -> None:
    """The Dockerfile builds the one binary into a numeric non-root runtime, and the build
    context (.dockerignore) keeps every file cargo needs."""
    dockerfile = (root / "Dockerfile").read_text()
    problems.check(
        "cargo build --release --locked -p leadflow" in dockerfile,
        "Dockerfile",
        "does not build the leadflow binary with cargo build --release --locked -p leadflow",
    )
    final_stage = dockerfile[dockerfile.rfind("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.M)
    problems.check(
        bool(users) and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]) is not None,
        "Dockerfile",
        "the runtime stage does not end with a numeric non-root USER",
    )
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    workspace = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]
    needed = ["Cargo.toml", "Cargo.lock", "proto"] + workspace["members"]
    for path in needed:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            if any(fnmatch.fnmatch(prefix, pattern.lstrip("/")) for prefix in prefixes):
                problems.add(".dockerignore", f"{pattern!r} leaves {path} out of the build")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kubernetes-version",
        action="append",
        required=True,
        help="validate against this Kubernetes version's schemas (repeatable)",
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository")
    parser.add_argument("variants", nargs="+", help="NAME=RENDERED.yaml")
    args = parser.parse_args()

    # The definitions file is large and the same for every document: read it once.
    schemas.schema_contents = functools.lru_cache(maxsize=None)(schemas.schema_contents)
    problems = Problems()
    for argument in args.variants:
        name, _, path = argument.partition("=")
        variant = Variant(name, Path(path))
        checked = validate_schemas(variant, args.kubernetes_version, problems)
        check_security(variant, problems)
        check_references(variant, problems)
        pods = check_services(variant, problems)
        check_network_policies(variant, pods, problems)
        check_ingress_and_backends(variant, problems)
        print(
            f"{name}: {len(variant.documents)} objects, {checked} schema validations "
            f"(Kubernetes {', '.join(args.kubernetes_version)})"
        )
    check_image_build(args.root, problems)
    for problem in problems.items:
        print(f"error: {problem}", file=sys.stderr)
    if problems.items:
        print(f"{len(problems.items)} problems", file=sys.stderr)
        return 1
    print("manifests and image build files pass every check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
