"""Write rill/values.schema.json, the chart's values schema (JSON Schema draft-07).

    python deploy/helm/build_schema.py          # rewrite it
    python deploy/helm/build_schema.py --check  # exit 1 when it is out of date

Generated rather than hand-written for one reason: JSON Schema cannot compare two
values, so "maxReplicas must not exceed partitions" is a table of if/then rules, one per
partition count up to PARTITION_TABLE (the template's own check covers counts above).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "rill" / "values.schema.json"
PARTITION_TABLE = 256

# Variables the chart sets from its own values; `env` may not set them a second time.
MANAGED_ENV = [
    "RILL_METRICS_PORT",
    "RILL_PROCESSES",
    "RILL_BOOTSTRAP_SERVERS",
    "RILL_INPUT_TOPIC",
    "RILL_GROUP_ID",
    "RILL_OUTPUT_TOPIC",
    "RILL_DLQ_TOPIC",
    "RILL_KAFKA_SECURITY_PROTOCOL",
    "RILL_KAFKA_SASL_MECHANISM",
    "RILL_KAFKA_SASL_USERNAME",
    "RILL_KAFKA_SASL_PASSWORD",
    "RILL_KAFKA_SSL_CA_LOCATION",
    "RILL_KAFKA_SSL_CERTIFICATE_LOCATION",
    "RILL_KAFKA_SSL_KEY_LOCATION",
    "RILL_KAFKA_SSL_KEY_PASSWORD",
    "RILL_REDIS_URL",
    "RILL_REDIS_PASSWORD",
    "RILL_REDIS_CLUSTER",
    "RILL_REDIS_SSL_CA_CERTS",
    "RILL_PROCESSING_GUARANTEE",
    "RILL_DELIVERY_TIMEOUT_S",
    "RILL_TRANSACTION_TIMEOUT_MS",
    "RILL_CONFIG",
    "RILL_SCHEMA_REGISTRY_PASSWORD",
]
# Secrets `env` may not hold as plain values; extraEnv takes them by valueFrom only.
SECRET_ENV = ["RILL_SCHEMA_REGISTRY_PASSWORD"]
# What the chart's own template sets.
CHART_SET_ENV = [name for name in MANAGED_ENV if name not in SECRET_ENV]
# Secrets never go into a ConfigMap: the pipeline file may not hold them.
SECRET_SETTINGS = [
    "redis_url",
    "redis_password",
    "kafka_sasl_password",
    "kafka_ssl_key_password",
    "schema_registry_password",
]

STR: dict[str, Any] = {"type": "string"}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}
NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
OPT_NAME = {"anyOf": [{"const": ""}, NAME]}
KEY = {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"}
OPT_KEY = {"type": "string", "pattern": "^[-._a-zA-Z0-9]*$"}
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
_PLACEHOLDER = "partition-rule-"
DNS_LABEL = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
OPT_DURATION = {"anyOf": [{"const": ""}, DURATION]}
ENV_NAME = {"type": "string", "pattern": "^[-._a-zA-Z][-._a-zA-Z0-9]*$"}
TOPIC = {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,249}$"}


def obj(props: dict[str, Any], required: list[str] | None = None, **more: Any) -> dict[str, Any]:
    """A closed object: unknown keys (typos) are refused."""
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    out.update(more)
    return out


def integer(minimum: int, maximum: int | None = None) -> dict[str, Any]:
    """An integer within bounds."""
    out: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        out["maximum"] = maximum
    return out


def kafka() -> dict[str, Any]:
    """Connection, topics and credentials by reference."""
    sasl_protocols = {"properties": {"securityProtocol": {"enum": ["SASL_PLAINTEXT", "SASL_SSL"]}}}
    return obj(
        {
            "bootstrapServers": {"type": "string", "minLength": 1},
            "topic": {**TOPIC, "description": "The input topic (required)."},
            "groupId": {"type": "string", "minLength": 1},
            "outputTopic": {"anyOf": [{"const": ""}, TOPIC]},
            "dlqTopic": {"anyOf": [{"const": ""}, TOPIC]},
            "securityProtocol": {"enum": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]},
            "sasl": obj(
                {
                    "mechanism": {"enum": ["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]},
                    "existingSecret": OPT_NAME,
                    "usernameKey": KEY,
                    "passwordKey": KEY,
                }
            ),
            "tls": obj(
                {
                    "existingSecret": OPT_NAME,
                    "caKey": KEY,
                    "certKey": OPT_KEY,
                    "keyKey": OPT_KEY,
                    "keyPasswordKey": OPT_KEY,
                }
            ),
        },
        required=["bootstrapServers", "topic", "groupId", "securityProtocol"],
        allOf=[
            {
                # SASL needs a mechanism and the Secret with the credentials.
                "if": sasl_protocols,
                "then": {
                    "properties": {
                        "sasl": {
                            "required": ["mechanism", "existingSecret"],
                            "properties": {
                                "mechanism": {"minLength": 1},
                                "existingSecret": {"minLength": 1},
                            },
                        }
                    }
                },
            },
            {
                # A client certificate comes with its key.
                "if": {"properties": {"tls": {"properties": {"certKey": {"minLength": 1}}}}},
                "then": {"properties": {"tls": {"properties": {"keyKey": {"minLength": 1}}}}},
            },
        ],
    )


def redis() -> dict[str, Any]:
    """The URL by value only without credentials; otherwise from a Secret."""
    return obj(
        {
            "existingSecret": OPT_NAME,
            "urlKey": OPT_KEY,
            "passwordKey": OPT_KEY,
            "url": {
                "type": "string",
                "pattern": "^((redis|rediss|unix)://[^@]*)?$",
                "description": "No credentials here: put a URL with a password in a Secret.",
            },
            "cluster": BOOL,
            "tls": obj({"existingSecret": OPT_NAME, "caKey": KEY}),
        },
        anyOf=[
            {"properties": {"url": {"minLength": 1}}, "required": ["url"]},
            {
                "properties": {"existingSecret": {"minLength": 1}, "urlKey": {"minLength": 1}},
                "required": ["existingSecret", "urlKey"],
            },
        ],
    )


def autoscaling() -> dict[str, Any]:
    """Modes, bounds, and maxReplicas never above the partition count."""
    # Placeholders, written out one rule per line by render().
    table = [f"{_PLACEHOLDER}{n}" for n in range(1, PARTITION_TABLE + 1)]
    return obj(
        {
            "enabled": BOOL,
            "mode": {"enum": ["hpa", "keda"]},
            "minReplicas": integer(0),
            "maxReplicas": integer(1),
            "partitions": {
                **integer(1),
                "description": "Partitions of kafka.topic; maxReplicas may not exceed it.",
            },
            "lagThreshold": integer(1),
            "repartitionTopic": {
                "type": "boolean",
                "description": "Scale on the lag of <kafka.groupId>-repartition too (a Python "
                "pipeline's group_by; implied by pipeline.group_by and env.RILL_GROUP_BY).",
            },
            "behavior": obj({"scaleUp": scaling_rules(), "scaleDown": scaling_rules()}),
            "hpa": obj(
                {
                    "externalMetric": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                    "metricLabels": {"type": "object", "additionalProperties": STR},
                }
            ),
            "keda": obj(
                {
                    "activationLagThreshold": integer(0),
                    "pollingInterval": integer(1),
                    "cooldownPeriod": integer(0),
                    "offsetResetPolicy": {"enum": ["earliest", "latest"]},
                }
            ),
        },
        required=["enabled", "mode", "minReplicas", "maxReplicas", "partitions", "lagThreshold"],
        allOf=table,
    )


def scaling_rules() -> dict[str, Any]:
    """HPAScalingRules (autoscaling/v2, Kubernetes 1.32) with every field closed."""
    policy = obj(
        {
            "type": {"enum": ["Pods", "Percent"]},
            "value": integer(1),
            "periodSeconds": integer(1, 1800),
        },
        required=["type", "value", "periodSeconds"],
    )
    return obj(
        {
            "stabilizationWindowSeconds": integer(0, 3600),
            "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
            "policies": {"type": "array", "items": policy, "minItems": 1},
        }
    )


def relabelings() -> dict[str, Any]:
    """prometheus-operator RelabelConfig list: a misspelt field is refused."""
    # The CRD's own enum (prometheus-operator v0.80): lower case or CamelCase.
    actions = "replace keep drop hashmod labelmap labeldrop labelkeep lowercase uppercase"
    camel = "Replace Keep Drop HashMod LabelMap LabelDrop LabelKeep Lowercase Uppercase"
    action = {"enum": [*actions.split(), *camel.split(), "keepequal", "KeepEqual"]}
    action["enum"] += ["dropequal", "DropEqual"]
    rule = obj(
        {
            "sourceLabels": {"type": "array", "items": STR},
            "separator": STR,
            "targetLabel": STR,
            "regex": STR,
            "modulus": integer(1),
            "replacement": STR,
            "action": action,
        }
    )
    return {"type": "array", "items": rule}


def scrape_monitor() -> dict[str, Any]:
    """A ServiceMonitor or PodMonitor: switches, interval, selectors and relabelings."""
    labels = {"type": "object", "additionalProperties": STR}
    return obj(
        {
            "enabled": BOOL,
            "interval": DURATION,
            "scrapeTimeout": OPT_DURATION,
            "labels": labels,
            "namespaceSelector": obj(
                {"any": BOOL, "matchNames": {"type": "array", "items": NAME}}
            ),
            "relabelings": relabelings(),
            "metricRelabelings": relabelings(),
        }
    )


def pod_extras() -> dict[str, Any]:
    """Pass-through pod spec lists: each entry named, the rest left to Kubernetes."""
    named = {"type": "object", "required": ["name"], "properties": {"name": NAME}}
    container = {
        "type": "object",
        "required": ["name", "image"],
        "properties": {"name": DNS_LABEL, "image": {"type": "string", "minLength": 1}},
    }
    mount = {
        "type": "object",
        "required": ["name", "mountPath"],
        "properties": {"name": NAME, "mountPath": {"type": "string", "pattern": "^/"}},
    }
    env = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {**ENV_NAME, "not": {"enum": CHART_SET_ENV}},
            "value": STR,
            "valueFrom": obj(
                {
                    "secretKeyRef": OBJ,
                    "configMapKeyRef": OBJ,
                    "fieldRef": OBJ,
                    "resourceFieldRef": OBJ,
                },
                minProperties=1,
                maxProperties=1,
            ),
        },
        "oneOf": [{"required": ["value"]}, {"required": ["valueFrom"]}],
        # A secret only by reference.
        "if": {"properties": {"name": {"enum": SECRET_ENV}}},
        "then": {"required": ["valueFrom"]},
    }
    return {
        "extraEnv": {"type": "array", "items": env},
        "initContainers": {"type": "array", "items": container},
        "sidecars": {"type": "array", "items": container},
        "extraVolumes": {"type": "array", "items": named},
        "extraVolumeMounts": {"type": "array", "items": mount},
    }


def monitoring() -> dict[str, Any]:
    """ServiceMonitor, PrometheusRule and dashboard switches and thresholds."""
    labels = {"type": "object", "additionalProperties": STR}
    return obj(
        {
            "serviceMonitor": scrape_monitor(),
            "podMonitor": scrape_monitor(),
            "annotationScrape": obj({"labels": labels}),
            "prometheusRule": obj(
                {
                    "enabled": BOOL,
                    "labels": labels,
                    "lagGrowingFor": DURATION,
                    "lagSecondsThreshold": {"type": "number", "exclusiveMinimum": 0},
                    "dlqRatePerSecond": {"type": "number", "minimum": 0},
                    "breakerOpenFor": DURATION,
                    "notReadyFor": DURATION,
                    "stateLostFor": DURATION,
                    "workersAbsentFor": DURATION,
                    "cannotScaleFor": DURATION,
                }
            ),
            "dashboard": obj(
                {
                    "enabled": BOOL,
                    "sidecarLabel": KEY,
                    "sidecarLabelValue": STR,
                    "annotations": labels,
                }
            ),
        }
    )


def schema() -> dict[str, Any]:
    """The whole values schema."""
    probe = obj(
        {"periodSeconds": integer(1), "timeoutSeconds": integer(1), "failureThreshold": integer(1)}
    )
    scalar = {"type": ["string", "number", "boolean"]}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "rill chart values",
        **obj(
            {
                "global": OBJ,
                "nameOverride": {"anyOf": [{"const": ""}, DNS_LABEL]},
                "fullnameOverride": {"anyOf": [{"const": ""}, DNS_LABEL]},
                "image": obj(
                    {
                        "repository": {"type": "string", "minLength": 1},
                        "tag": STR,
                        "digest": {"anyOf": [{"const": ""}, {"pattern": "^sha256:[a-f0-9]{64}$"}]},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    },
                    required=["repository"],
                ),
                "imagePullSecrets": {"type": "array"},
                "replicas": integer(0),
                "kafka": kafka(),
                "redis": redis(),
                "processing": obj(
                    {
                        "guarantee": {"enum": ["at_least_once", "exactly_once"]},
                        "deliveryTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0},
                        "transactionTimeoutMs": integer(1000, 900_000),
                    },
                    required=["guarantee", "deliveryTimeoutSeconds", "transactionTimeoutMs"],
                ),
                "terminationGracePeriodSeconds": {"anyOf": [{"const": ""}, integer(1)]},
                "drainMarginSeconds": integer(0),
                "pipeline": {
                    "type": "object",
                    "propertyNames": {
                        "pattern": "^[a-z][a-z0-9_]*$",
                        "not": {"enum": SECRET_SETTINGS},
                    },
                    "description": "rill settings by YAML name; secrets belong in Secrets.",
                },
                "existingPipelineConfigMap": OPT_NAME,
                "schemas": obj(
                    {
                        "mountPath": {"type": "string", "pattern": "^/"},
                        "files": {
                            "type": "object",
                            "propertyNames": KEY,
                            "additionalProperties": STR,
                        },
                        "binaryFiles": {
                            "type": "object",
                            "propertyNames": KEY,
                            "additionalProperties": STR,
                        },
                        "existingConfigMap": OPT_NAME,
                        "existingSecret": OPT_NAME,
                    }
                ),
                "env": {
                    "type": "object",
                    "propertyNames": {
                        "pattern": "^(RILL|OTEL)_[A-Z0-9_]+$",
                        "not": {"enum": MANAGED_ENV},
                    },
                    "additionalProperties": scalar,
                },
                "envFromSecrets": {"type": "array", "items": NAME},
                **pod_extras(),
                "metricsPort": integer(1, 65535),
                "processes": {
                    **integer(1, 64),
                    "description": "Group members per pod (RILL_PROCESSES).",
                },
                "resources": OBJ,
                "podSecurityContext": OBJ,
                "securityContext": OBJ,
                "tmpSizeLimit": {"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi)?$"},
                "probes": obj({"startup": probe, "liveness": probe, "readiness": probe}),
                "podDisruptionBudget": obj(
                    {"enabled": BOOL, "maxUnavailable": {"type": ["integer", "string"]}}
                ),
                "topologySpread": obj(
                    {
                        "enabled": BOOL,
                        "maxSkew": integer(1),
                        "whenUnsatisfiable": {"enum": ["ScheduleAnyway", "DoNotSchedule"]},
                        "topologyKeys": {"type": "array", "items": STR},
                    }
                ),
                "serviceAccount": obj({"create": BOOL, "name": STR, "automountToken": BOOL}),
                "podAnnotations": {"type": "object", "additionalProperties": STR},
                "podLabels": {"type": "object", "additionalProperties": STR},
                "nodeSelector": {"type": "object", "additionalProperties": STR},
                "tolerations": {"type": "array"},
                "affinity": OBJ,
                "priorityClassName": STR,
                "networkPolicy": obj(
                    {
                        "enabled": BOOL,
                        "metricsFrom": {"type": "array", "items": OBJ},
                        "extraIngress": {"type": "array", "items": OBJ},
                        "egress": {"type": "array", "items": OBJ},
                        "allowDNS": BOOL,
                    }
                ),
                "autoscaling": autoscaling(),
                "prometheusAdapter": obj({"ruleConfigMap": BOOL}),
                "monitoring": monitoring(),
            },
            required=["image", "kafka", "redis", "processing", "autoscaling", "metricsPort"],
        ),
    }


def _partition_rule(n: int) -> dict[str, Any]:
    return {
        "if": {"properties": {"partitions": {"const": n}}, "required": ["partitions"]},
        "then": {"properties": {"maxReplicas": {"maximum": n}}},
    }


def render() -> str:
    """The schema as committed: indented, one partition rule per line."""
    text = json.dumps(schema(), indent=2) + "\n"
    for n in range(1, PARTITION_TABLE + 1):
        compact = json.dumps(_partition_rule(n), separators=(",", ":"))
        text = text.replace(f'"{_PLACEHOLDER}{n}"', compact)
    return text


def main(argv: list[str]) -> int:
    """Write the schema, or with --check say whether the committed one is current."""
    text = render()
    if "--check" in argv:
        if SCHEMA_PATH.read_text() != text:
            sys.stderr.write(f"{SCHEMA_PATH.name} is out of date: run {sys.argv[0]}\n")
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
