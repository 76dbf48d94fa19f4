{{- define "rill.name" -}}{{ .Release.Name }}-rill{{- end -}}
{{- define "rill.labels" -}}
app.kubernetes.io/name: rill
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "rill.checks" -}}
{{- if .Values.autoscaling.enabled -}}
{{- if gt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.partitions) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) must not exceed autoscaling.partitions (%d): extra replicas get no partition" (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.partitions)) -}}
{{- end -}}
{{- if not (has .Values.autoscaling.mode (list "hpa" "keda")) -}}
{{- fail "autoscaling.mode must be hpa or keda" -}}
{{- end -}}
{{- end -}}
{{- end -}}
