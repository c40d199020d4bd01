{{- define "ganglion.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The gateway's own labels: part-of ganglion, never ganglion.dev/neuron (discovery
would take the gateway for a neuron). */}}
{{- define "ganglion.labels" -}}
{{ include "ganglion.selector" . }}
app.kubernetes.io/part-of: ganglion
app.kubernetes.io/component: gateway
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ganglion.selector" -}}
app.kubernetes.io/name: ganglion
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ganglion.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "ganglion.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "ganglion.keysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "ganglion.fullname" .)) -}}
{{- end -}}

{{- define "ganglion.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "ganglion.fullname" .)) -}}
{{- end -}}

{{- define "ganglion.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Where the store is: the subchart's server (its password from its Secret, through
libpq's PGPASSWORD, so any character works), or an external URL from a Secret. */}}
{{- define "ganglion.databaseEnv" -}}
{{- if .Values.postgresql.enabled }}
{{- $pg := printf "%s-postgresql" .Release.Name | trunc 63 | trimSuffix "-" }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.auth.existingSecret | default $pg }}
      key: password
- name: GANGLION_DATABASE_URL
  value: {{ printf "postgresql://%s@%s:5432/%s" .Values.postgresql.auth.username $pg .Values.postgresql.auth.database | quote }}
{{- else if or .Values.database.url .Values.database.existingSecret }}
- name: GANGLION_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ganglion.databaseSecret" . }}
      key: {{ .Values.database.existingSecretKey }}
{{- else }}
{{- fail "the gateways need a PostgreSQL store: set postgresql.enabled=true, or database.existingSecret (or database.url) for an external one" }}
{{- end }}
{{- end -}}

{{- define "ganglion.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* A read-only root: /tmp and the home folder are the only places written. */}}
{{- define "ganglion.mounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /var/lib/ganglion
- name: api-keys
  mountPath: /etc/ganglion/keys
  readOnly: true
{{- end -}}
