"""Static checks for the Ray cluster-launcher config ``cluster.yaml``.

No AWS account, no network, no Ray cluster: the checks validate the file
against the JSON schema bundled with the installed ``ray`` package, run Ray's
own launcher validation (the same ``prepare_config`` + ``validate_config``
pair that ``ray up`` runs before touching the cloud), and enforce hpsearch's
own rules (GPU workers, no credentials, hpsearch installed on every node,
token auth kept on).

Every project rule is a ``*_problems`` function that returns a list of
findings.  Each one is run on the real file (must find nothing) *and* on a
deliberately broken copy (must find something), so none of the assertions
can pass vacuously.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.resources
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys.

    Plain ``yaml.safe_load`` keeps the last duplicate without a word.
    """


def _construct_unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


@pytest.fixture(scope="module")
def text() -> str:
    assert CLUSTER_YAML.is_file(), f"{CLUSTER_YAML} is missing"
    return CLUSTER_YAML.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config(text) -> dict:
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict), "cluster.yaml must be a YAML mapping"
    return cfg


@pytest.fixture()
def cfg(config) -> dict:
    """A fresh deep copy per test, safe to mutate."""
    return copy.deepcopy(config)


def test_yaml_has_no_duplicate_keys(text):
    yaml.load(text, Loader=_UniqueKeyLoader)  # raises on a duplicate key
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=_UniqueKeyLoader)


# --------------------------------------------------------------------------
# (a) Schema validation: Ray's bundled JSON schema and Ray's own validator
# --------------------------------------------------------------------------


def _ray_schema_resource():
    return importlib.resources.files("ray.autoscaler").joinpath("ray-schema.json")


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    resource = _ray_schema_resource()
    assert resource.is_file(), "ray.autoscaler/ray-schema.json not found in the installed ray"
    schema = json.loads(resource.read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


def _schema_validate(instance: dict, schema: dict) -> None:
    # Use the draft the schema declares ($schema: draft-07).
    cls = jsonschema.validators.validator_for(schema)
    jsonschema.validate(instance, schema, cls=cls)


def test_schema_file_is_the_one_ray_uses(ray_schema):
    """Ray's validate_config() reads the schema from next to ray.autoscaler."""
    import ray.autoscaler

    with importlib.resources.as_file(_ray_schema_resource()) as path:
        expected = Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json"
        assert Path(path).resolve() == expected.resolve()
    # Sanity: it really is the cluster-launcher schema and it is strict.
    assert ray_schema.get("additionalProperties") is False
    assert {"cluster_name", "provider"} <= set(ray_schema["required"])
    assert "available_node_types" in ray_schema["properties"]


def test_cluster_yaml_matches_ray_schema(config, ray_schema):
    _schema_validate(config, ray_schema)


def test_schema_rejects_unknown_top_level_key(cfg, ray_schema):
    cfg["not_a_ray_option"] = True
    with pytest.raises(jsonschema.ValidationError, match="not_a_ray_option"):
        _schema_validate(cfg, ray_schema)


def test_schema_rejects_typo_inside_node_type(cfg, ray_schema):
    worker = next(n for k, n in cfg["available_node_types"].items() if k != cfg["head_node_type"])
    worker["max_worker"] = worker.pop("max_workers")  # classic typo
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _schema_validate(cfg, ray_schema)


def test_schema_rejects_fractional_resources(cfg, ray_schema):
    worker = next(n for k, n in cfg["available_node_types"].items() if k != cfg["head_node_type"])
    worker["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        _schema_validate(cfg, ray_schema)


def _ray_launcher_validation():
    """(prepare_config, validate_config) as `ray up` uses them, if this Ray has them."""
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as exc:  # private module: may move in a future Ray
        pytest.skip(f"ray.autoscaler._private.util validators not available: {exc}")
    return prepare_config, validate_config


def test_ray_validate_config_accepts_cluster_yaml(cfg):
    prepare_config, validate_config = _ray_launcher_validation()
    # `ray up` merges the provider defaults (offline: aws/defaults.yaml) first;
    # validate_config() requires the filled-in fields, e.g. cluster_synced_files.
    prepared = prepare_config(cfg)
    validate_config(prepared)
    # Merging the defaults must not have replaced our node types with Ray's.
    assert set(prepared["available_node_types"]) == set(cfg["available_node_types"])
    assert prepared["head_node_type"] == cfg["head_node_type"]


def test_ray_validate_config_rejects_unknown_top_level_key(cfg):
    prepare_config, validate_config = _ray_launcher_validation()
    cfg["not_a_ray_option"] = True
    with pytest.raises(jsonschema.ValidationError, match="not_a_ray_option"):
        validate_config(prepare_config(cfg))


def test_ray_validate_config_rejects_min_workers_above_cap(cfg):
    prepare_config, validate_config = _ray_launcher_validation()
    for name, node in cfg["available_node_types"].items():
        if name != cfg["head_node_type"]:
            node["min_workers"] = cfg["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(cfg))


# --------------------------------------------------------------------------
# (b) An autoscaling GPU worker type exists
# --------------------------------------------------------------------------

_GPU_INSTANCE_FAMILY = re.compile(r"^(g4dn|g4ad|g5|g5g|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e|p5en|p6)\.")


def gpu_worker_problems(cfg: dict) -> list[str]:
    problems: list[str] = []
    head = cfg.get("head_node_type")
    types = cfg.get("available_node_types") or {}
    cap = cfg.get("max_workers", 0)

    gpu_workers = {
        name: node
        for name, node in types.items()
        if name != head and (node.get("resources") or {}).get("GPU", 0) >= 1
    }
    if not gpu_workers:
        problems.append("no worker node type declares resources.GPU >= 1")
    for name, node in gpu_workers.items():
        lo, hi = node.get("min_workers", 0), node.get("max_workers", 0)
        if hi <= 0:
            problems.append(f"{name}: max_workers must be > 0 (got {hi})")
        if lo > hi:
            problems.append(f"{name}: min_workers {lo} > max_workers {hi}")
        if hi > cap:
            problems.append(f"{name}: max_workers {hi} > cluster max_workers {cap}")
        if (node.get("resources") or {}).get("CPU", 0) < 1:
            problems.append(f"{name}: resources.CPU must be >= 1 (data loading)")
        itype = (node.get("node_config") or {}).get("InstanceType", "")
        if not _GPU_INSTANCE_FAMILY.match(itype):
            problems.append(f"{name}: InstanceType {itype!r} is not a GPU instance")
    if cap <= 0:
        problems.append("cluster max_workers must be > 0")

    head_node = types.get(head) or {}
    if (head_node.get("resources") or {}).get("GPU", 0):
        problems.append("head node should be CPU-only")
    if _GPU_INSTANCE_FAMILY.match((head_node.get("node_config") or {}).get("InstanceType", "")):
        problems.append("head node should not be a GPU instance")
    return problems


def _gpu_worker(cfg):
    worker = next(
        (
            n for k, n in cfg["available_node_types"].items()
            if k != cfg["head_node_type"] and (n.get("resources") or {}).get("GPU")
        ),
        None,
    )
    assert worker is not None, "cluster.yaml has no GPU worker type to break"
    return worker


def test_gpu_worker_type_present(config):
    assert gpu_worker_problems(config) == []


@pytest.mark.parametrize(
    "breakage",
    [
        "drop_gpu_resource",
        "max_workers_zero",
        "cpu_instance",
        "cluster_cap_zero",
        "gpu_on_head",
    ],
)
def test_gpu_worker_check_can_fail(cfg, breakage):
    worker = _gpu_worker(cfg)
    if breakage == "drop_gpu_resource":
        worker["resources"].pop("GPU")
    elif breakage == "max_workers_zero":
        worker["max_workers"] = 0
    elif breakage == "cpu_instance":
        worker["node_config"]["InstanceType"] = "m5.xlarge"
    elif breakage == "cluster_cap_zero":
        cfg["max_workers"] = 0
    elif breakage == "gpu_on_head":
        cfg["available_node_types"][cfg["head_node_type"]]["resources"] = {"GPU": 1}
    assert gpu_worker_problems(cfg), f"{breakage} was not detected"


# --------------------------------------------------------------------------
# (c) No credentials in the file
# --------------------------------------------------------------------------

# Checked against the whole raw text, comments included: a secret pasted into
# a comment would be committed too.
_RAW_PATTERNS = {
    "AWS credential key name": re.compile(
        r"aws_access_key_id|aws_secret_access_key|aws_session_token", re.IGNORECASE
    ),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "PEM private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "64-hex secret (Ray auth token format)": re.compile(r"\b[0-9a-fA-F]{64}\b"),
    "40-char AWS secret access key": re.compile(
        r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+=]*[0-9])(?=[A-Za-z0-9/+=]*[a-z])"
        r"(?=[A-Za-z0-9/+=]*[A-Z])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
    ),
}

# Checked against the non-comment part of each line: a key whose name looks
# secret, with a literal value. References ($VAR, $(cmd), ~/path, /path) are
# allowed; explanatory comments may mention "token" freely.
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b[\w.-]*(?:token|secret|password|passwd|api[_-]?key|access[_-]?key)[\w.-]*"
    r"[\"']?\s*[:=]\s*[\"']?(?![\"'$~/{\s])\S"
)

_SECRET_KEY_NAME = re.compile(
    r"(?i)(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key|private[_-]?key)"
)


def _strip_yaml_comment(line: str) -> str:
    # A YAML comment starts with '#' at line start or after whitespace.
    m = re.search(r"(^|\s)#", line)
    return line[: m.start()] if m else line


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield path + (str(k),), k, v
            yield from _walk(v, path + (str(k),))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (str(i),))


def credential_findings(raw_text: str) -> list[str]:
    findings: list[str] = []
    for label, pattern in _RAW_PATTERNS.items():
        for m in pattern.finditer(raw_text):
            line = raw_text.count("\n", 0, m.start()) + 1
            findings.append(f"line {line}: {label}")
    for lineno, line in enumerate(raw_text.splitlines(), 1):
        code = _strip_yaml_comment(line)
        if _SECRET_ASSIGNMENT.search(code):
            findings.append(f"line {lineno}: secret-looking assignment: {code.strip()!r}")
    # Structural: a mapping key that names a secret and holds a literal value.
    try:
        parsed = yaml.safe_load(raw_text)
    except yaml.YAMLError as exc:
        return findings + [f"unparsable YAML: {exc}"]
    for path, key, value in _walk(parsed):
        if not isinstance(key, str) or not _SECRET_KEY_NAME.search(key):
            continue
        if not isinstance(value, (str, int, float)) or value in ("", None):
            continue
        sval = str(value)
        # A key-file *path* (e.g. auth.ssh_private_key, a file mount) is fine.
        if sval.startswith(("~/", "/", "./", "$")):
            continue
        findings.append(f"{'.'.join(path)}: literal value for a secret-looking key")
    return findings


def test_no_credentials_in_cluster_yaml(text):
    assert credential_findings(text) == []


def _fake(*parts: str) -> str:
    # Built at runtime so that this test file itself holds no credential-looking
    # literal that secret scanners (or the patterns above) would flag.
    return "".join(parts)


_LEAKS = {
    "aws key name in provider": (
        "provider:",
        "provider:\n  " + _fake("aws_secret", "_access_key") + ": x",
    ),
    "access key id in a comment": (
        "cluster_name: hpsearch",
        "cluster_name: hpsearch  # " + _fake("AK", "IA", "Q3EGRIWHQ4T5Z6XB"),
    ),
    "40-char secret in env": (
        "setup_commands:",
        "setup_commands:\n  - echo " + _fake("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCY0EXAMPLEKE"),
    ),
    "pem private key": (
        "cluster_name: hpsearch",
        "cluster_name: hpsearch\n# " + _fake("-----BEGIN RSA ", "PRIVATE KEY-----"),
    ),
    "literal token: value": (
        "cluster_name: hpsearch",
        "cluster_name: hpsearch\nmetadata:\n  " + _fake("tok", "en") + ": s3cr3tvalue",
    ),
    "RAY_AUTH_TOKEN literal in a command": (
        "worker_setup_commands: []",
        "worker_setup_commands:\n  - export " + _fake("RAY_AUTH_", "TOKEN") + "=abc123def456",
    ),
    "ray token pasted": (
        "cluster_name: hpsearch",
        "cluster_name: hpsearch\n# " + _fake("0123456789abcdef" * 2, "fedcba9876543210" * 2),
    ),
}


@pytest.mark.parametrize("leak", sorted(_LEAKS))
def test_credential_check_can_fail(text, leak):
    anchor, replacement = _LEAKS[leak]
    assert anchor in text, f"anchor {anchor!r} not in cluster.yaml; update the test"
    leaked = text.replace(anchor, replacement, 1)
    assert credential_findings(leaked), f"{leak} was not detected"


def test_credential_check_allows_references():
    ok = (
        'auth:\n  ssh_user: ubuntu\n  ssh_private_key: ~/.ssh/hpsearch.pem\n'
        'file_mounts:\n  "~/.ray/auth_token": "~/.ray/auth_token"\n'
        "setup_commands:\n  - export RAY_AUTH_TOKEN=$(cat ~/.ray/auth_token)\n"
        "  - export RAY_AUTH_MODE=token\n"
        "# the token: generated locally, never written here\n"
    )
    assert credential_findings(ok) == []


# --------------------------------------------------------------------------
# (d) hpsearch is installed on every node
# --------------------------------------------------------------------------

_PIP_INSTALL = re.compile(r"\bpip3?\s+install\b")
_EDITABLE_SYNCED = re.compile(r"\bpip3?\s+install\b.*(?:-e|--editable)\s+['\"]?~/hpsearch\b")
_FROM_GIT = re.compile(r"\bpip3?\s+install\b.*git\+\S*hpsearch")
_RAY_PIN = re.compile(r"ray\[[^\]]*\]==([0-9][0-9A-Za-z.+-]*)")


def install_problems(cfg: dict) -> list[str]:
    problems: list[str] = []
    # setup_commands run on head AND workers; head_/worker_setup_commands on one
    # side only. Trials run on the workers, so it must be in setup_commands
    # (or in both of the role-specific lists).
    common = [c for c in cfg.get("setup_commands") or [] if isinstance(c, str)]
    head = [c for c in cfg.get("head_setup_commands") or [] if isinstance(c, str)]
    worker = [c for c in cfg.get("worker_setup_commands") or [] if isinstance(c, str)]

    def installs(cmds):
        return [c for c in cmds if _EDITABLE_SYNCED.search(c) or _FROM_GIT.search(c)]

    common_hits = installs(common)
    if not common_hits and not (installs(head) and installs(worker)):
        problems.append("no `pip install` of hpsearch that runs on every node")

    mounts = cfg.get("file_mounts") or {}
    if any(_EDITABLE_SYNCED.search(c) for c in common + head + worker):
        if mounts.get("~/hpsearch") not in (".", "./"):
            problems.append('editable install of ~/hpsearch needs file_mounts "~/hpsearch": "."')

    # Trials import torch / ray inside the workers: the installs must come
    # after the venv is activated, i.e. the hpsearch install is not first.
    if common_hits and common.index(common_hits[0]) == 0:
        problems.append("hpsearch is installed before the Python environment is set up")

    # Ray on the nodes must be the version the project is tested with.
    pins = {m.group(1) for c in common for m in _RAY_PIN.finditer(c) if _PIP_INSTALL.search(c)}
    local = importlib.metadata.version("ray")
    if pins != {local}:
        problems.append(f"setup_commands pin ray {sorted(pins) or 'nothing'}, project env has ray {local}")
    return problems


def test_setup_commands_install_hpsearch(config):
    assert install_problems(config) == []


@pytest.mark.parametrize(
    "breakage", ["remove_install", "head_only", "no_file_mount", "wrong_ray_pin", "install_first"]
)
def test_install_check_can_fail(cfg, breakage):
    is_install = lambda c: bool(_EDITABLE_SYNCED.search(c) or _FROM_GIT.search(c))  # noqa: E731
    if breakage == "remove_install":
        cfg["setup_commands"] = [c for c in cfg["setup_commands"] if not is_install(c)]
    elif breakage == "head_only":
        moved = [c for c in cfg["setup_commands"] if is_install(c)]
        cfg["setup_commands"] = [c for c in cfg["setup_commands"] if not is_install(c)]
        cfg["head_setup_commands"] = list(cfg.get("head_setup_commands") or []) + moved
    elif breakage == "no_file_mount":
        cfg["file_mounts"].pop("~/hpsearch")
    elif breakage == "wrong_ray_pin":
        cfg["setup_commands"] = [
            _RAY_PIN.sub(lambda m: m.group(0).replace(m.group(1), "0.0.1"), c)
            for c in cfg["setup_commands"]
        ]
    elif breakage == "install_first":
        inst = [c for c in cfg["setup_commands"] if is_install(c)]
        cfg["setup_commands"] = inst + [c for c in cfg["setup_commands"] if not is_install(c)]
    assert install_problems(cfg), f"{breakage} was not detected"


# --------------------------------------------------------------------------
# Token authentication stays on, and the token reaches every node
# --------------------------------------------------------------------------


def token_auth_problems(cfg: dict, raw_text: str) -> list[str]:
    problems: list[str] = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cmds = [c for c in cfg.get(key) or [] if isinstance(c, str)]
        starts = [c for c in cmds if re.search(r"\bray\s+start\b", c)]
        if not starts:
            problems.append(f"{key}: no `ray start`")
        for c in starts:
            if not re.search(r"\bRAY_AUTH_MODE=token\b", c):
                problems.append(f"{key}: `ray start` without RAY_AUTH_MODE=token")
    if re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", _non_comment_text(raw_text)):
        problems.append("token auth is disabled somewhere")
    mounts = cfg.get("file_mounts") or {}
    if mounts.get("~/.ray/auth_token") != "~/.ray/auth_token":
        problems.append('file_mounts must ship "~/.ray/auth_token" to the nodes')
    return problems


def _non_comment_text(raw_text: str) -> str:
    return "\n".join(_strip_yaml_comment(line) for line in raw_text.splitlines())


def test_token_auth_enforced(config, text):
    assert token_auth_problems(config, text) == []


@pytest.mark.parametrize("breakage", ["worker_no_mode", "head_no_mode", "disabled", "no_mount"])
def test_token_auth_check_can_fail(cfg, text, breakage):
    raw = text
    if breakage == "worker_no_mode":
        cfg["worker_start_ray_commands"] = [
            c.replace("RAY_AUTH_MODE=token", "") for c in cfg["worker_start_ray_commands"]
        ]
    elif breakage == "head_no_mode":
        cfg["head_start_ray_commands"] = [
            c.replace("RAY_AUTH_MODE=token", "") for c in cfg["head_start_ray_commands"]
        ]
    elif breakage == "disabled":
        raw = text.replace("initialization_commands: []",
                           "initialization_commands:\n  - export RAY_AUTH_MODE=disabled", 1)
        assert raw != text
    elif breakage == "no_mount":
        cfg["file_mounts"].pop("~/.ray/auth_token")
    assert token_auth_problems(cfg, raw), f"{breakage} was not detected"


# --------------------------------------------------------------------------
# Shared storage guidance and autoscaling knobs
# --------------------------------------------------------------------------


def test_documents_shared_storage_and_usage(text, config):
    setup = "\n".join(config["setup_commands"])
    assert "mount -t nfs4" in setup and "/mnt/hpsearch" in setup, "every node must mount the shared storage"
    assert "HPSEARCH_SHARED_STORAGE=1" in setup, "nodes must declare the storage shared"
    assert re.search(r"hpsearch run \S+ --address auto --storage /mnt/hpsearch", text), "usage example missing"
    assert "ray job submit" in text, "job submission example missing"


def test_autoscaling_knobs(config):
    assert config["cluster_name"] == "hpsearch"
    assert config["provider"]["type"] == "aws" and config["provider"].get("region")
    assert 0 < config["idle_timeout_minutes"] <= 60
    assert config["upscaling_speed"] > 0
    assert "docker" not in config or not config["docker"]
