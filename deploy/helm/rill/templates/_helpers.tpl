{{/*
The name of every object: fullnameOverride, else <release>-<nameOverride or "rill">,
at most 63 characters.
*/}}
{{- define "rill.name" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (default "rill" .Values.nameOverride) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: stable for the life of a release (a Deployment's selector is immutable). */}}
{{- define "rill.selectorLabels" -}}
app.kubernetes.io/name: {{ default "rill" .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rill.labels" -}}
{{ include "rill.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "rill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "rill.name" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set (it wins over the tag), else repository:tag. */}}
{{- define "rill.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{/*
The grace period SIGTERM needs to drain (see values.yaml and docs/kubernetes.md):
delivery timeout, plus in exactly-once the transaction commit (bounded by the smaller of
the delivery and transaction timeouts), plus a margin for poll, close and leaving the group.
*/}}
{{- define "rill.gracePeriod" -}}
{{- $p := .Values.processing -}}
{{- $delivery := int (ceil (float64 $p.deliveryTimeoutSeconds)) -}}
{{- $commit := 0 -}}
{{- if eq $p.guarantee "exactly_once" -}}
{{- $txn := int (ceil (divf (float64 $p.transactionTimeoutMs) 1000.0)) -}}
{{- $commit = min $delivery $txn -}}
{{- end -}}
{{- add $delivery $commit (int .Values.drainMarginSeconds) -}}
{{- end -}}

{{/* Cross-value checks JSON Schema cannot express; values.schema.json does the rest. */}}
{{- define "rill.checks" -}}
{{- $a := .Values.autoscaling -}}
{{- if gt (int $a.maxReplicas) (int $a.partitions) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) must not exceed autoscaling.partitions (%d): extra replicas get no partition" (int $a.maxReplicas) (int $a.partitions)) -}}
{{- end -}}
{{- $n := int .Values.processes -}}
{{- if and (gt $n 1) $a.enabled (gt (mul (int $a.maxReplicas) $n) (int $a.partitions)) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) x processes (%d) must not exceed autoscaling.partitions (%d): each process is a group member, and extra members get no partition" (int $a.maxReplicas) $n (int $a.partitions)) -}}
{{- end -}}
{{- if and (gt $n 1) (not $a.enabled) (gt (mul (int .Values.replicas) $n) (int $a.partitions)) -}}
{{- fail (printf "replicas (%d) x processes (%d) must not exceed autoscaling.partitions (%d): each process is a group member, and extra members get no partition" (int .Values.replicas) $n (int $a.partitions)) -}}
{{- end -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if and $a.enabled (eq $a.mode "hpa") (lt (int $a.minReplicas) 1) -}}
{{- fail "autoscaling.minReplicas must be at least 1 in mode hpa (scale to zero needs mode keda)" -}}
{{- end -}}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled -}}
{{- fail "monitoring: enable serviceMonitor or podMonitor, not both (each worker would be scraped twice, under two job labels)" -}}
{{- end -}}
{{- if and .Values.schemas.existingConfigMap .Values.schemas.existingSecret -}}
{{- fail "schemas: set existingConfigMap or existingSecret, not both" -}}
{{- end -}}
{{- if and (or .Values.schemas.existingConfigMap .Values.schemas.existingSecret) (or .Values.schemas.files .Values.schemas.binaryFiles) -}}
{{- fail "schemas: files/binaryFiles make a ConfigMap of their own; do not combine them with existingConfigMap or existingSecret" -}}
{{- end -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int (include "rill.gracePeriod" .)) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) is below the drain time the timeouts allow (%s s): raise it or leave it empty to derive it" (int .Values.terminationGracePeriodSeconds) (include "rill.gracePeriod" .)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The bits of pod spec that change pods when they change. */}}
{{- define "rill.pipelineConfigMap" -}}
{{- default (printf "%s-pipeline" (include "rill.name" .)) .Values.existingPipelineConfigMap -}}
{{- end -}}

{{- define "rill.hasPipeline" -}}
{{- if or .Values.pipeline .Values.existingPipelineConfigMap -}}true{{- end -}}
{{- end -}}

{{- define "rill.hasSchemas" -}}
{{- if or .Values.schemas.files .Values.schemas.binaryFiles .Values.schemas.existingConfigMap .Values.schemas.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* librdkafka SASL mechanism -> KEDA's `sasl` mode. */}}
{{- define "rill.kedaSasl" -}}
{{- $m := .Values.kafka.sasl.mechanism -}}
{{- if eq $m "PLAIN" -}}plaintext
{{- else if eq $m "SCRAM-SHA-256" -}}scram_sha256
{{- else if eq $m "SCRAM-SHA-512" -}}scram_sha512
{{- else -}}none
{{- end -}}
{{- end -}}

{{- define "rill.saslEnabled" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{- define "rill.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{/*
The labels Prometheus gives this release's workers, by how they are scraped: a
ServiceMonitor's targets get the Service name as `job`, a PodMonitor's
`<namespace>/<PodMonitor name>`; with annotation scraping (neither) the job depends on
the scrape config, so `monitoring.annotationScrape.labels` names what it sets (empty: no
label beyond the namespace). A YAML map; the alerts and the HPA's selector both use it.
*/}}
{{- define "rill.scrapeLabels" -}}
{{- $m := .Values.monitoring -}}
{{- if $m.serviceMonitor.enabled -}}
job: {{ include "rill.name" . | quote }}
{{- else if $m.podMonitor.enabled -}}
job: {{ printf "%s/%s" .Release.Namespace (include "rill.name" .) | quote }}
{{- else if $m.annotationScrape.labels -}}
{{- toYaml $m.annotationScrape.labels -}}
{{- end -}}
{{- end -}}

{{/* PromQL matchers that pick this release's workers: the namespace and the scrape labels. */}}
{{- define "rill.promSelector" -}}
{{- $out := list (printf "namespace=%q" .Release.Namespace) -}}
{{- range $k, $v := (include "rill.scrapeLabels" . | fromYaml) -}}
{{- $out = append $out (printf "%s=%q" $k (toString $v)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* The topics whose lag scales the workers: kafka.topic, and group_by's repartition
topic `<groupId>-repartition` when the pipeline re-keys (pipeline.group_by,
env.RILL_GROUP_BY, or autoscaling.repartitionTopic for a Python pipeline's group_by). */}}
{{- define "rill.lagTopics" -}}
{{- $topics := list .Values.kafka.topic -}}
{{- if or (index .Values.pipeline "group_by") (index .Values.env "RILL_GROUP_BY") .Values.autoscaling.repartitionTopic -}}
{{- $topics = append $topics (printf "%s-repartition" .Values.kafka.groupId) -}}
{{- end -}}
{{- toJson $topics -}}
{{- end -}}
