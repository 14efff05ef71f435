"""Kubernetes manifests for the hub on a Strimzi-managed Kafka cluster, rendered from the code's own declarations.

``hub deploy render`` writes what :func:`render` and :func:`render_files` return. Nothing here is a hand-kept
list: topics and their configs come from :func:`hub.topics.hub_topics`, users and their ACLs from
:func:`hub.access.desired_acls`, the processes from ``consumers.stages.STAGES`` and ``hub.supervisor.CLOCK``, and their
environment from :class:`hub.settings.HubSettings`' field names. So a new topic, ACL or stage reaches Kubernetes
the next time the manifests are rendered, and nothing can drift from what ``hub topics init`` and
``hub access apply`` do on other clusters.

- ``kafka.yaml``: a Strimzi ``Kafka`` (KRaft, SCRAM-SHA-512 on a TLS listener, the simple authorizer, no super
  user: Strimzi's own operators authenticate by certificates it issues) and its ``KafkaNodePool`` of nodes that
  are controllers and brokers both.
- ``topics.yaml``: a ``KafkaTopic`` per topic. Kubernetes names are lower-case DNS names and ORIs are not, so
  ``metadata.name`` is a sanitised form (:func:`kube_name`) and ``spec.topicName`` the real name.
- ``users.yaml``: a ``KafkaUser`` per principal with exactly the model's ACLs; Strimzi's User Operator removes
  any other ACL of those users, as ``hub access apply`` does.
- ``stages.yaml``: a headless Service and a StatefulSet per stage and for the clock (:func:`process_documents`).

Strimzi names a SCRAM user after its KafkaUser resource and (0.45 to 0.49) has no field for another name, while
Kubernetes wants resource names in lower case: that is why the hub's principals are lower case
(:func:`hub.access.agency_principal`), so each is its own KafkaUser's name (:func:`kafka_user_name`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import tomllib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import yaml

from consumers.runner import STOP_TIMEOUT_S
from consumers.stages import STAGES
from hub.access import CLUSTER, HUB, MECHANISM, AclRule, desired_acls, principals
from hub.broker import require_tool
from hub.exceptions import ManifestError
from hub.settings import REPO_ROOT, HubSettings, get_settings
from hub.supervisor import CLOCK
from hub.topics import hub_topics

STRIMZI_VERSION = "0.45.0"
STRIMZI_API = "kafka.strimzi.io/v1beta2"
#: The Kafka Strimzi 0.45 runs by default (it supports 3.8 and 3.9; Kafka 4 needs a newer Strimzi).
STRIMZI_KAFKA_VERSION = "3.9.0"
APP = "task-force-hub"
DEFAULT_NAMESPACE = APP
DEFAULT_CLUSTER = "hub"
DEFAULT_IMAGE = f"{APP}:{package_version(APP)}"
DEFAULT_BROKERS = 3
DEFAULT_STORAGE = "100Gi"
#: Two instances of each process: a pod on a failed node is not replaced until the node is gone (a StatefulSet
#: never runs two pods of one ordinal), so the other instance takes its partitions meanwhile.
DEFAULT_REPLICAS = 2
TLS_PORT = 9093
METRICS_PORT = HubSettings.model_fields["metrics_port"].default
NODE_POOL = "dual-role"
HUB_UID = 10001
RUNTIME_DIR = "/var/lib/hub"
CA_DIR = "/etc/hub/ca"
KEK_DIR = "/etc/hub/kek"
KEK_SECRET = "hub-kek"
CRD_CACHE = "strimzi-crds"
#: Kubernetes' rule for most resource names (RFC 1123 subdomain).
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

_RESOURCE = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactionalId", "CLUSTER": "cluster"}
_PATTERN = {"LITERAL": "literal", "PREFIXED": "prefix"}
#: What a Strimzi 0.45 KafkaUser can grant (its CRD's enum), by the Kafka names AclRule uses.
_OPERATION = {op: "".join(word.capitalize() for word in op.split("_")) for op in (
    "ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
    "ALTER_CONFIGS", "IDEMPOTENT_WRITE")}

FILE_PURPOSES = {
    "kafka.yaml": "The Kafka cluster (Strimzi Kafka + KafkaNodePool): KRaft, SCRAM-SHA-512 over TLS, ACLs enforced.",
    "topics.yaml": "Every topic the hub needs (Strimzi KafkaTopic), as declared in schemas/topics.py.",
    "users.yaml": "A SCRAM user per principal (Strimzi KafkaUser) with exactly the ACLs of hub/access.py.",
    "stages.yaml": "Each processing stage and the clock: a headless Service and a StatefulSet.",
}


# -- names --------------------------------------------------------------------------------------------------------
def kube_name(name: str) -> str:
    """The Kubernetes resource name for a Kafka name: lower case, and '-' for characters Kubernetes refuses."""
    candidate = re.sub(r"[^a-z0-9.-]", "-", name.lower())
    if not DNS_SUBDOMAIN.match(candidate):
        raise ManifestError(f"{name!r} has no Kubernetes resource name ({candidate!r} is not a DNS subdomain)",
                            hint="Use a topic prefix of letters, digits, '-' and single dots, e.g. `--prefix prod.`.")
    return candidate


def kafka_user_name(principal: str) -> str:
    """The SCRAM user a principal is on a Strimzi cluster: its KafkaUser's name, so it must be a Kubernetes name
    (the hub's principals are: :func:`hub.access.agency_principal` lower-cases the ORI for this)."""
    if not DNS_SUBDOMAIN.match(principal):
        raise ManifestError(f"the principal {principal!r} cannot be a KafkaUser (not a lower-case DNS subdomain)",
                            hint="Principals are hub, agency-<ori>, tf-<unit> and auditor-<name> (hub/access.py).")
    return principal


def _unique(names: Iterable[str], what: str) -> None:
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise ManifestError(f"{what} would share Kubernetes names: {', '.join(twice)}",
                            hint="Names that differ only in case or punctuation need a different topic prefix.")


# -- Kafka, topics, users -----------------------------------------------------------------------------------------
def _metadata(name: str, namespace: str, labels: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **({"labels": dict(labels)} if labels else {}), **extra}


def kafka_documents(*, namespace: str, cluster: str, kafka_version: str, brokers: int,
                    storage: str) -> list[dict[str, Any]]:
    """The Kafka resource and its node pool; replication as ``hub topics init`` chooses it (3, or fewer brokers)."""
    replication = min(3, brokers)
    min_isr = min(2, replication)
    kafka = {
        "apiVersion": STRIMZI_API, "kind": "Kafka",
        "metadata": _metadata(cluster, namespace, annotations={"strimzi.io/kraft": "enabled",
                                                               "strimzi.io/node-pools": "enabled"}),
        "spec": {
            "kafka": {
                "version": kafka_version,
                "listeners": [{"name": "tls", "port": TLS_PORT, "type": "internal", "tls": True,
                               "authentication": {"type": "scram-sha-512"}}],
                "authorization": {"type": "simple"},
                "config": {
                    "auto.create.topics.enable": False,  # every topic is a KafkaTopic of topics.yaml
                    "default.replication.factor": replication, "min.insync.replicas": min_isr,
                    "offsets.topic.replication.factor": replication,
                    "transaction.state.log.replication.factor": replication,
                    "transaction.state.log.min.isr": min_isr,
                },
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
    }
    pool = {
        "apiVersion": STRIMZI_API, "kind": "KafkaNodePool",
        "metadata": _metadata(NODE_POOL, namespace, {"strimzi.io/cluster": cluster}),
        "spec": {"replicas": brokers, "roles": ["controller", "broker"],
                 "storage": {"type": "persistent-claim", "size": storage, "deleteClaim": False}},
    }
    return [kafka, pool]


def topic_documents(prefix: str, agencies: list[str], task_forces: list[str], *, namespace: str, cluster: str,
                    brokers: int) -> list[dict[str, Any]]:
    """A KafkaTopic per topic of :func:`hub.topics.hub_topics`, with its partitions and configs."""
    wanted = hub_topics(prefix, agencies, list(STAGES), task_forces)
    documents = [{"apiVersion": STRIMZI_API, "kind": "KafkaTopic",
                  "metadata": _metadata(kube_name(name), namespace, {"strimzi.io/cluster": cluster}),
                  "spec": {"topicName": name, "partitions": spec.partitions, "replicas": min(3, brokers),
                           "config": {key: str(value) for key, value in spec.configs.items()}}}
                 for name, spec in wanted]
    _unique((doc["metadata"]["name"] for doc in documents), "topics")
    return documents


def _acl_entries(rules: Iterable[AclRule]) -> list[dict[str, Any]]:
    """Strimzi's form of one user's ACLs: one entry per resource, host and permission, listing its operations."""
    grouped: dict[tuple[str, str, str, str, str], list[str]] = defaultdict(list)
    for rule in sorted(rules):
        if rule.operation not in _OPERATION:
            raise ManifestError(f"a Strimzi {STRIMZI_VERSION} KafkaUser cannot grant {rule.operation} ({rule})",
                                hint="Strimzi grants only " + ", ".join(_OPERATION.values()) + ".")
        if rule.resource_type == "CLUSTER" and (rule.pattern, rule.name) != ("LITERAL", CLUSTER):
            raise ManifestError(f"Strimzi names the cluster resource only as the literal {CLUSTER!r} ({rule})")
        grouped[rule.resource_type, rule.pattern, rule.name, rule.host, rule.permission].append(
            _OPERATION[rule.operation])
    entries = []
    for (kind, pattern, name, host, permission), operations in grouped.items():
        resource = {"type": "cluster"} if kind == "CLUSTER" else {
            "type": _RESOURCE[kind], "name": name, "patternType": _PATTERN[pattern]}
        entries.append({"resource": resource, "operations": operations, **({"host": host} if host != "*" else {}),
                        **({"type": permission.lower()} if permission != "ALLOW" else {})})
    return entries


def user_documents(prefix: str, agencies: list[str], task_forces: list[str], auditors: list[str], *,
                   namespace: str, cluster: str) -> list[dict[str, Any]]:
    """A KafkaUser per principal of :func:`hub.access.principals`, with its rules of
    :func:`hub.access.desired_acls` (a literal ``*`` topic when there is no prefix, as on any other cluster)."""
    rules = desired_acls(prefix, agencies, task_forces, auditors)
    documents = []
    for principal in principals(agencies, task_forces, auditors):
        spec: dict[str, Any] = {"authentication": {"type": "scram-sha-512"}}
        mine = [rule for rule in rules if rule.principal == principal]
        if mine:
            spec["authorization"] = {"type": "simple", "acls": _acl_entries(mine)}
        documents.append({"apiVersion": STRIMZI_API, "kind": "KafkaUser",
                          "metadata": _metadata(kafka_user_name(principal), namespace, {"strimzi.io/cluster": cluster}),
                          "spec": spec})
    _unique((doc["metadata"]["name"] for doc in documents), "principals")
    return documents


def acls_of_users(documents: Iterable[Mapping[str, Any]]) -> set[AclRule]:
    """The ACLs Strimzi's User Operator creates for these KafkaUsers (other documents are skipped): the inverse of
    the rendering, under each user's Kubernetes name (:func:`kafka_user_name`)."""
    kinds = {value: key for key, value in _RESOURCE.items()}
    patterns = {value: key for key, value in _PATTERN.items()}
    operations = {value: key for key, value in _OPERATION.items()}
    rules = set()
    for document in documents:
        if document.get("kind") != "KafkaUser":
            continue
        user = document["metadata"]["name"]
        for acl in (document["spec"].get("authorization") or {}).get("acls", []):
            resource = acl["resource"]
            kind = kinds[resource["type"]]
            name, pattern = (CLUSTER, "LITERAL") if kind == "CLUSTER" else (
                resource["name"], patterns[resource.get("patternType", "literal")])
            rules |= {AclRule(user, kind, pattern, name, operations[op], acl.get("type", "allow").upper(),
                              acl.get("host", "*")) for op in acl["operations"]}
    return rules


# -- the hub's processes ------------------------------------------------------------------------------------------
def _env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    """Environment entries for HubSettings fields, so a renamed or removed setting fails here, not in a pod."""
    unknown = sorted(set(values) - set(HubSettings.model_fields))
    if unknown:
        raise ManifestError(f"not hub settings: {', '.join(unknown)}", hint="See `hub --help` for the settings.")
    return [{"name": env_name(field), "value": value} for field, value in values.items()]


def env_name(field: str) -> str:
    return f"{HubSettings.model_config['env_prefix']}{field.upper()}"


def process_documents(name: str, replicas: int, *, prefix: str, namespace: str, cluster: str,
                      image: str) -> list[dict[str, Any]]:
    """A headless Service and a StatefulSet running ``hub run NAME --instance <pod ordinal>``.

    A StatefulSet rather than a Deployment: the runner's transactional id is ``<group>.<instance>``, and it must be
    the same across restarts, so a restarted instance fences its zombie (its predecessor's open transaction is
    aborted) instead of both writing. A Deployment's pods have random names, a StatefulSet's ordinal is stable and
    never held by two pods at once. State needs no volume: it is rebuilt from the changelog topic.
    """
    labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": name, "app.kubernetes.io/part-of": APP}
    resource = f"hub-{name}"
    user = kafka_user_name(HUB)
    env = _env({
        "bootstrap_servers": f"{cluster}-kafka-bootstrap:{TLS_PORT}", "security_protocol": "SASL_SSL",
        "sasl_mechanism": MECHANISM, "sasl_username": user, "ssl_cafile": f"{CA_DIR}/ca.crt",
        "kek_file": f"{KEK_DIR}/kek", "topic_prefix": prefix, "runtime_dir": RUNTIME_DIR, "metrics_host": "0.0.0.0",
        "metrics_port": str(METRICS_PORT), "log_format": "json",
    })
    # The password Strimzi's User Operator keeps in a Secret named after the KafkaUser.
    env.append({"name": env_name("sasl_password"), "valueFrom": {"secretKeyRef": {"name": user, "key": "password"}}})
    container = {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        # HOSTNAME is the pod's name, hub-<name>-<ordinal>; exec, so SIGTERM reaches hub and it commits its batch.
        "command": ["sh", "-c", f'exec hub run {name} --instance "${{HOSTNAME##*-}}"'],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10,
                          "timeoutSeconds": 5, "failureThreshold": 6},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5,
                           "timeoutSeconds": 5},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "runtime", "mountPath": RUNTIME_DIR}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "cluster-ca", "mountPath": CA_DIR, "readOnly": True},
                         {"name": "kek", "mountPath": KEK_DIR, "readOnly": True}],
    }
    pod = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": int(STOP_TIMEOUT_S) + 15,  # the runner's own bound on stopping, and some
        "securityContext": {"runAsNonRoot": True, "runAsUser": HUB_UID, "runAsGroup": HUB_UID, "fsGroup": HUB_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": labels}}],
        "containers": [container],
        "volumes": [
            {"name": "runtime", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
            # Group-readable: the files belong to root and the pod's fsGroup, the hub runs as that group.
            {"name": "cluster-ca", "secret": {"secretName": f"{cluster}-cluster-ca-cert", "defaultMode": 0o440,
                                              "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"name": "kek", "secret": {"secretName": KEK_SECRET, "defaultMode": 0o440,
                                       "items": [{"key": "kek", "path": "kek"}]}},
        ],
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(resource, namespace, labels),
        "spec": {"clusterIP": "None", "selector": labels,
                 "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}]},
    }
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _metadata(resource, namespace, labels),
        "spec": {
            "serviceName": resource, "replicas": replicas, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels}, "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": pod,
            },
        },
    }
    return [service, statefulset]


def processes() -> list[str]:
    """What runs as pods: every stage, in pipeline order, then the clock."""
    return [*STAGES, CLOCK]


def _replica_counts(replicas: Mapping[str, int] | None) -> dict[str, int]:
    names = processes()
    unknown = sorted(set(replicas or {}) - set(names))
    if unknown:
        raise ManifestError(f"no process named {', '.join(unknown)}", hint=f"Choose from {', '.join(names)}.")
    counts = {name: DEFAULT_REPLICAS for name in names} | dict(replicas or {})
    bad = sorted(name for name, count in counts.items() if count < 1)
    if bad:
        raise ManifestError(f"every process needs at least one instance: {', '.join(bad)}",
                            hint="Give each a count of 1 or more (the default is 2).")
    return counts


# -- everything ---------------------------------------------------------------------------------------------------
def render(agencies: list[str], task_forces: list[str], auditors: list[str], *, prefix: str = "",
           namespace: str = DEFAULT_NAMESPACE, cluster: str = DEFAULT_CLUSTER, image: str = DEFAULT_IMAGE,
           replicas: Mapping[str, int] | None = None, kafka_version: str = STRIMZI_KAFKA_VERSION,
           brokers: int = DEFAULT_BROKERS, storage: str = DEFAULT_STORAGE) -> dict[str, list[dict[str, Any]]]:
    """Every manifest, by file name (``kafka.yaml``, ``topics.yaml``, ``users.yaml``, ``stages.yaml``). Pure."""
    if brokers < 1:
        raise ManifestError(f"a cluster needs at least one broker, not {brokers}", hint="Pass --brokers 3.")
    for what, value in (("namespace", namespace), ("cluster", cluster)):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", value):
            raise ManifestError(f"the {what} name {value!r} is not a Kubernetes name",
                                hint="Use lower-case letters, digits and '-' (at most 40 characters).")
    counts = _replica_counts(replicas)
    places = {"namespace": namespace, "cluster": cluster}
    return {
        "kafka.yaml": kafka_documents(**places, kafka_version=kafka_version, brokers=brokers, storage=storage),
        "topics.yaml": topic_documents(prefix, agencies, task_forces, **places, brokers=brokers),
        "users.yaml": user_documents(prefix, agencies, task_forces, auditors, **places),
        "stages.yaml": [document for name, count in counts.items()
                        for document in process_documents(name, count, prefix=prefix, image=image, **places)],
    }


def render_containerfile() -> str:
    """The image every process runs (build it from the repository root); the packages are pyproject.toml's."""
    try:
        project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
        packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ManifestError(f"cannot read the packages to install from {REPO_ROOT / 'pyproject.toml'}: {exc}",
                            hint="Render from a checkout of the repository.") from exc
    copies = "\n".join(f"COPY {package} {package}" for package in packages)
    return f"""\
# The image of every hub process (`hub run STAGE`, `hub run clock`); rendered by `hub deploy render`.
# Build it from the repository root: podman build -f <out>/Containerfile -t {DEFAULT_IMAGE} .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
{copies}
RUN pip install --no-cache-dir . && rm -rf /src
RUN groupadd --system --gid {HUB_UID} hub \\
 && useradd --system --uid {HUB_UID} --gid hub --create-home --home-dir {RUNTIME_DIR} --shell /usr/sbin/nologin hub
USER {HUB_UID}:{HUB_UID}
WORKDIR {RUNTIME_DIR}
ENV HUB_RUNTIME_DIR={RUNTIME_DIR} HUB_LOG_FORMAT=json
ENTRYPOINT ["hub"]
CMD ["--help"]
"""


class _PlainDumper(yaml.SafeDumper):
    """Writes a mapping used twice (a selector's labels) in full each time: no YAML anchors for a reader to chase."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_files(documents: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    """The text of each file :func:`render` made (multi-document YAML), plus the ``Containerfile``."""
    header = "# {purpose}\n# Rendered by `hub deploy render` from the hub's declarations: render again, do not edit.\n"
    texts = {name: header.format(purpose=FILE_PURPOSES[name])
             + yaml.dump_all(docs, Dumper=_PlainDumper, sort_keys=False, width=120, explicit_start=True)
             for name, docs in documents.items()}
    return texts | {"Containerfile": render_containerfile()}


# -- Strimzi's CRDs, for checking what is rendered ----------------------------------------------------------------
#: Strimzi's install file of each kind, and the --api-versions it is generated with: the arguments of the
#: ``generate-crd-co-install-v1`` and ``generate-crd-co-install-v1-eo`` executions in io.strimzi:api's pom.
_CRDS = {
    "Kafka": ("v1beta2", "kafka.Kafka", "040-Crd-kafka.yaml"),
    "KafkaNodePool": ("v1beta2", "nodepool.KafkaNodePool", "04A-Crd-kafkanodepool.yaml"),
    "KafkaTopic": ("v1alpha1,v1beta1,v1beta2", "topic.KafkaTopic", "043-Crd-kafkatopic.yaml"),
    "KafkaUser": ("v1alpha1,v1beta1,v1beta2", "user.KafkaUser", "044-Crd-kafkauser.yaml"),
}


def strimzi_crds(cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Strimzi's CRDs of the kinds rendered here, by kind, generated once into ``cache_dir`` (default
    ``<runtime dir>/strimzi-crds/<version>``) by Strimzi's own CRD generator from its API model on Maven Central
    (deploy/strimzi/pom.xml): the same bytes as the release's install files, so no copy is kept in the repo."""
    cache = cache_dir or get_settings().runtime_dir / CRD_CACHE / STRIMZI_VERSION
    if not all((cache / file).exists() for _, _, file in _CRDS.values()):
        _generate_crds(cache)
    return {kind: yaml.safe_load((cache / file).read_text()) for kind, (_, _, file) in _CRDS.items()}


def _generate_crds(cache: Path) -> None:
    mvn = require_tool("mvn", "to fetch Strimzi's CRD generator from Maven Central")
    java = require_tool("java", "to run Strimzi's CRD generator")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as scratch:
        draft = Path(scratch) / "crds"
        draft.mkdir()
        classpath = Path(scratch) / "classpath.txt"
        _run([mvn, "-B", "-q", "-f", str(REPO_ROOT / "deploy" / "strimzi" / "pom.xml"),
              f"-Dstrimzi.version={STRIMZI_VERSION}", "dependency:build-classpath", f"-Dmdep.outputFile={classpath}"],
             "Maven could not resolve Strimzi's API model and CRD generator")
        generator = [java, "-cp", classpath.read_text().strip(), "io.strimzi.crdgenerator.CrdGenerator",
                     "--label", "app:strimzi", "--label", "strimzi.io/crd-install:true", "--target-kube", "1.16+",
                     "--crd-api-version", "v1", "--storage-version", "v1beta2", "--yaml"]
        by_versions: dict[str, list[str]] = defaultdict(list)
        for versions, model, file in _CRDS.values():
            by_versions[versions].append(f"io.strimzi.api.kafka.model.{model}={draft / file}")
        for versions, outputs in by_versions.items():
            _run([*generator, "--api-versions", versions, *outputs], "Strimzi's CRD generator failed")
        shutil.rmtree(cache, ignore_errors=True)
        draft.rename(cache)


def _run(command: list[str], failure: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ManifestError(f"{failure}:\n{tail}",
                            hint="Check that Maven Central is reachable (`mvn -v`, proxy settings), then run again.")
