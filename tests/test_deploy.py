"""Checks of the deployment files: the image, the Compose stack, Prometheus, Grafana, Kubernetes.

No container engine or cluster is needed. The Compose file is validated against the Compose
Specification's JSON schema, of which check-jsonschema ships a copy. The Kubernetes manifests are
validated against the API schemas that kubernetes-validate ships for `KUBERNETES_VERSION`. Every
darkroom configuration they carry is loaded with the server's own loader.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from darkroom_gpu.config import Settings, load_settings
from darkroom_gpu.metrics import Metrics
from darkroom_gpu.sources.filesystem import FilesystemOptions
from darkroom_gpu.sources.s3 import S3Options
from tests.conftest import SAMPLES, ClientFactory

ROOT: Final = Path(__file__).parent.parent
DOCKERFILE: Final = ROOT / "Dockerfile.cuda"
DOCKERIGNORE: Final = ROOT / ".dockerignore"
COMPOSE: Final = ROOT / "docker-compose.gpu.yml"
COMPOSE_CONFIG: Final = ROOT / "deploy" / "compose" / "darkroom.yaml"
PROMETHEUS: Final = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA: Final = ROOT / "deploy" / "grafana"
DASHBOARD: Final = GRAFANA / "dashboards" / "darkroom.json"
KUBERNETES: Final = ROOT / "deploy" / "kubernetes"
ADAPTER_RULES: Final = KUBERNETES / "prometheus-adapter-rules.yaml"
KUSTOMIZATION: Final = KUBERNETES / "kustomization.yaml"
MANIFESTS: Final = sorted(
    path for path in KUBERNETES.glob("*.yaml") if path not in (ADAPTER_RULES, KUSTOMIZATION)
)

# The Kubernetes release whose API the manifests are checked against. They need nothing newer,
# and nothing older than 1.30, which introduced the preStop sleep action.
KUBERNETES_VERSION: Final = "1.33.0"
SAMPLE_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}
METRIC_NAME: Final = re.compile(r"(?<![A-Za-z0-9_])darkroom_[a-z0-9_]+")
SELECTOR: Final = re.compile(r"(darkroom_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL: Final = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
COMPOSE_VARIABLE: Final = re.compile(r"\$\{([A-Z_]+):-([^}]*)\}")


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file whose top level is a mapping."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: expected a mapping at the top level"
    return data


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Parse every document of a YAML file, skipping empty ones."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert all(isinstance(doc, dict) for doc in documents)
    return documents


def compose_services() -> dict[str, Any]:
    services = load_yaml(COMPOSE)["services"]
    assert isinstance(services, dict)
    return services


def interpolate(value: str) -> str:
    """Resolve Compose's ``${NAME:-default}`` to its default, as with an empty environment."""
    return COMPOSE_VARIABLE.sub(lambda match: match.group(2), value)


def bind_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Map each host path of a service's short-syntax bind mounts to its container path."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[source.removeprefix("./")] = target
    return mounts


def published_ports(service: Mapping[str, Any]) -> dict[int, int]:
    """Map each container port of a service to the host port it is published on."""
    ports = {}
    for entry in service.get("ports", []):
        host, container = str(entry).split(":")
        ports[int(container)] = int(host)
    return ports


def exported_metrics() -> dict[str, frozenset[str]]:
    """Map each sample name the server can export to its label names (``le`` for buckets)."""
    metrics = Metrics()
    # prometheus_client has no public accessor for a metric's label names. The registry lists
    # them only in samples, which a labelled metric has once it has been used.
    labels = {
        family.name: frozenset(metric._labelnames)
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    }
    names = {}
    for family in metrics.registry.collect():
        for suffix in SAMPLE_SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            names[family.name + suffix] = labels[family.name] | extra
    return names


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[str]:
    """Return every PromQL expression of the dashboard, its variable queries included."""
    queries = [
        target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
            queries.append(variable["query"]["query"])
    return queries


def manifest(kind: str) -> dict[str, Any]:
    """Return the one Kubernetes object of `kind` among the manifests."""
    found = [doc for path in MANIFESTS for doc in load_documents(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def load_embedded_config(tmp_path: Path, text: str, environ: Mapping[str, str]) -> Settings:
    """Load a darkroom configuration given as text, from a file in `tmp_path`."""
    path = tmp_path / "darkroom.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ=environ)


# --- Dockerfile.cuda ------------------------------------------------------------------------


def test_dockerfile_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("0", "root")


def test_dockerfile_serves_all_interfaces() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    commands = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert json.loads(commands[-1]) == ["darkroom-gpu", "serve", "--host", "0.0.0.0"]
    assert re.search(r"^EXPOSE 3000$", text, re.MULTILINE)
    assert "DARKROOM_CONFIG=/etc/darkroom/darkroom.yaml" in text


def test_dockerfile_healthcheck_hits_healthz() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD (\[.*\])$", text, re.MULTILINE)
    assert healthcheck is not None
    command = json.loads(healthcheck.group(1))
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")


def test_dockerfile_has_triton_build_tools() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    runtime_stage = text.rsplit("\nFROM ", 1)[1]
    packages = re.search(r"apt-get install -y --no-install-recommends ([^\\&]+)", runtime_stage)

    assert packages is not None
    assert {"python3", "gcc", "libc6-dev", "python3-dev"} <= set(packages.group(1).split())


def test_dockerfile_copies_files_in_context() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = [
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert "darkroom_gpu" in copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert source not in ignored, f"COPY {source}: excluded by .dockerignore"


# --- docker-compose.gpu.yml -----------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    # check-jsonschema vendors the Compose Specification's schema. Its file is read without
    # importing the package, which would load its command line.
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None
    assert spec.origin is not None
    path = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def test_compose_matches_specification() -> None:
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [
        f"{error.json_path}: {error.message}" for error in validator.iter_errors(load_yaml(COMPOSE))
    ]
    assert errors == []


def test_compose_schema_rejects_typo() -> None:
    document = load_yaml(COMPOSE)
    document["services"]["darkroom"]["deploy"]["resources"]["reservations"]["device"] = []
    validator = jsonschema.Draft202012Validator(compose_schema())
    assert not validator.is_valid(document)


def test_compose_has_stack_services() -> None:
    assert set(compose_services()) == {"darkroom", "minio", "minio-init", "prometheus", "grafana"}


def test_compose_bind_mounts_exist() -> None:
    for name, service in compose_services().items():
        for source in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"


def test_compose_builds_cuda_image() -> None:
    build = compose_services()["darkroom"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]) == DOCKERFILE


def test_compose_reserves_gpu() -> None:
    deploy = compose_services()["darkroom"]["deploy"]
    devices = deploy["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)


def test_compose_publishes_server_port() -> None:
    assert published_ports(compose_services()["darkroom"]) == {3000: 3000}


def test_compose_host_ports_unique() -> None:
    host_ports = [
        host
        for service in compose_services().values()
        for host in published_ports(service).values()
    ]
    assert len(host_ports) == len(set(host_ports))


def test_compose_mounts_config_at_darkroom_config() -> None:
    service = compose_services()["darkroom"]
    mounts = bind_mounts(service)
    config_path = mounts[str(COMPOSE_CONFIG.relative_to(ROOT))]
    assert config_path == service["environment"]["DARKROOM_CONFIG"]


def test_compose_config_loads(tmp_path: Path) -> None:
    service = compose_services()["darkroom"]
    raw = load_yaml(COMPOSE_CONFIG)
    filesystem = [source for source in raw["sources"] if source["kind"] == "filesystem"]
    # The folder that the samples are mounted on exists only in the container.
    mounted_root = filesystem[0]["root"]
    assert bind_mounts(service)["darkroom_gpu/samples"] == mounted_root
    images = tmp_path / "images"
    shutil.copytree(SAMPLES, images)
    text = COMPOSE_CONFIG.read_text(encoding="utf-8").replace(mounted_root, str(images))
    environ = {
        name: interpolate(str(value))
        for name, value in service["environment"].items()
        if name != "DARKROOM_CONFIG"
    }

    settings = load_embedded_config(tmp_path, text, environ)

    sources = {source.name: source for source in settings.sources}
    assert set(sources) == {"samples", "bucket"}
    assert isinstance(sources["samples"].options, FilesystemOptions)
    assert sources["samples"].options.root == images
    bucket = sources["bucket"].options
    assert isinstance(bucket, S3Options)
    assert bucket.endpoint_url == "http://minio:9000"
    assert bucket.access_key_id == "darkroom"
    assert bucket.secret_access_key == "darkroom-local-only"
    shared = settings.cache.shared
    assert shared is not None
    assert shared.endpoint_url == "http://minio:9000"
    assert shared.access_key_id == "darkroom"
    assert settings.device == "cuda"


def test_compose_minio_init_creates_buckets() -> None:
    raw = load_yaml(COMPOSE_CONFIG)
    script = compose_services()["minio-init"]["command"][0]
    buckets = [source["bucket"] for source in raw["sources"] if source["kind"] == "s3"]
    buckets.append(raw["cache"]["shared"]["bucket"])
    for bucket in buckets:
        assert f"local/{bucket}" in script


def test_compose_minio_init_uses_server_keys() -> None:
    services = compose_services()
    keys = services["minio"]["environment"]
    assert services["minio-init"]["environment"] == keys
    darkroom = services["darkroom"]["environment"]
    assert darkroom["DARKROOM_SOURCES__BUCKET__ACCESS_KEY_ID"] == keys["MINIO_ROOT_USER"]
    assert darkroom["DARKROOM_SOURCES__BUCKET__SECRET_ACCESS_KEY"] == keys["MINIO_ROOT_PASSWORD"]


# --- Prometheus and Grafana -----------------------------------------------------------------


def test_prometheus_scrapes_metrics_port() -> None:
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    darkroom = jobs["darkroom"]
    server = load_yaml(COMPOSE_CONFIG)["server"]
    assert darkroom.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for group in darkroom["static_configs"] for target in group["targets"]]
    assert targets == [f"darkroom:{server['metrics_port']}"]
    # Prometheus reaches the metrics port on the stack's network, so only the main port is
    # published on the host.
    assert published_ports(compose_services()["darkroom"]) == {server["port"]: server["port"]}


def test_prometheus_config_mounted() -> None:
    mounts = bind_mounts(compose_services()["prometheus"])
    assert mounts[str(PROMETHEUS.relative_to(ROOT))] == "/etc/prometheus/prometheus.yml"


def test_grafana_datasource_is_prometheus_service() -> None:
    provisioning = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "prometheus"
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus"
    assert url.port in published_ports(compose_services()["prometheus"])


def test_grafana_loads_dashboard_folder() -> None:
    provisioning = load_yaml(GRAFANA / "provisioning" / "dashboards" / "darkroom.yml")
    (provider,) = provisioning["providers"]
    service = compose_services()["grafana"]
    mounts = bind_mounts(service)
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["deploy/grafana/dashboards"] == provider["options"]["path"]
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# --- the dashboard --------------------------------------------------------------------------


def test_dashboard_metrics_exported() -> None:
    exported = exported_metrics()
    used = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert used
    assert sorted(used - set(exported)) == []


def test_dashboard_shows_every_metric() -> None:
    families = {family.name for family in Metrics().registry.collect()}
    used = " ".join(dashboard_queries())
    missing = [name for name in families if not re.search(rf"\b{name}(_[a-z]+)?\b", used)]
    assert missing == []


def test_dashboard_selectors_use_known_labels() -> None:
    exported = exported_metrics()
    for query in dashboard_queries():
        for name, matchers in SELECTOR.findall(query):
            for label in MATCHER_LABEL.findall(matchers):
                assert label in exported[name], f"{name} has no label {label!r}: {query}"


def test_dashboard_filters_by_source() -> None:
    exported = exported_metrics()
    for query in dashboard_queries():
        if query.startswith("label_values("):
            continue
        for name in METRIC_NAME.findall(query):
            if "source" in exported[name]:
                assert re.search(rf'{name}\{{[^}}]*source=~"\$source"', query), query


def test_dashboard_source_variable() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    source = variables["source"]
    assert source["definition"] == "label_values(darkroom_requests_total, source)"
    assert source["includeAll"] is True
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_panels_use_datasource_variable() -> None:
    panels = list(dashboard_panels())
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


async def test_live_metrics_are_declared(make_client: ClientFactory) -> None:
    client = await make_client()
    for target in ("/jolla.jpg?w=64", "/jolla.jpg", "/missing.jpg", "/jolla.jpg?w=abc"):
        await client.get(target)
    response = await client.get("/metrics")
    assert response.status == 200

    families = text_string_to_metric_families(await response.text())
    samples = {sample.name: set(sample.labels) for family in families for sample in family.samples}

    exported = exported_metrics()
    assert "darkroom_requests_total" in samples
    for name, labels in samples.items():
        assert name in exported, f"{name} is served but not derived from the registry"
        assert labels <= exported[name], name


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_manifest_matches_kubernetes_schema(path: Path) -> None:
    for document in load_documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_rejects_typo() -> None:
    deployment = manifest("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_manifests() -> None:
    resources = load_yaml(KUSTOMIZATION)["resources"]
    assert sorted(resources) == sorted(path.name for path in MANIFESTS)


def test_configmap_config_loads(tmp_path: Path) -> None:
    configmap = manifest("ConfigMap")
    settings = load_embedded_config(tmp_path, configmap["data"]["darkroom.yaml"], {})
    assert settings.server.port == 3000
    assert settings.device == "cuda"
    assert settings.cache.shared is not None
    assert [source.kind for source in settings.sources] == ["s3", "http"]


def test_deployment_mounts_configmap() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    environment = {variable["name"]: variable.get("value") for variable in container["env"]}
    config_path = Path(environment["DARKROOM_CONFIG"])
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    configmap = manifest("ConfigMap")

    assert mounts["config"] == str(config_path.parent)
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_path.name in configmap["data"]


def test_deployment_requests_one_gpu() -> None:
    (container,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "cpu" in container["resources"]["requests"]
    assert "memory" in container["resources"]["requests"]


def test_deployment_probes() -> None:
    (container,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names


def test_deployment_grace_covers_drain(tmp_path: Path) -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = load_embedded_config(tmp_path, manifest("ConfigMap")["data"]["darkroom.yaml"], {})
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + settings.server.shutdown_timeout


def test_deployment_scrapes_metrics_port(tmp_path: Path) -> None:
    template = manifest("Deployment")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    settings = load_embedded_config(tmp_path, manifest("ConfigMap")["data"]["darkroom.yaml"], {})
    annotations = template["metadata"]["annotations"]

    assert settings.server.metrics_port is not None
    assert ports["metrics"] == settings.server.metrics_port
    assert ports["http"] == settings.server.port
    assert annotations["prometheus.io/port"] == str(settings.server.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_leaves_out_metrics_port() -> None:
    (container,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    metrics_port = next(port for port in container["ports"] if port["name"] == "metrics")
    targets = {port["targetPort"] for port in manifest("Service")["spec"]["ports"]}
    assert targets == {"http"}
    assert metrics_port["containerPort"] not in targets


def test_deployment_runs_as_non_root() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_service_and_budget_select_pods() -> None:
    deployment = manifest("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    service = manifest("Service")
    budget = manifest("PodDisruptionBudget")

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {port["name"] for port in container["ports"]}


def test_autoscaler_metric_served_by_adapter() -> None:
    autoscaler = manifest("HorizontalPodAutoscaler")
    assert (
        autoscaler["spec"]["scaleTargetRef"]["name"] == manifest("Deployment")["metadata"]["name"]
    )
    (metric,) = autoscaler["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    rules = load_yaml(ADAPTER_RULES)["rules"]["custom"]
    served = {rule["name"]["as"]: rule for rule in rules}

    assert name == "darkroom_queue_depth"
    assert name in exported_metrics()
    assert METRIC_NAME.findall(served[name]["seriesQuery"]) == [name]
    assert set(served[name]["resources"]["overrides"]) == {"namespace", "pod"}
