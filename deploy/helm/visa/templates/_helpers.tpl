{{- define "visa.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "visa.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "visa.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "visa.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "visa.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "visa.fullname" .)) -}}
{{- end -}}

{{/* What every visa container gets: the settings file, the secrets, the database. */}}
{{- define "visa.env" -}}
- name: VISA_CONFIG
  value: /etc/visa/visa.toml
- name: PROMETHEUS_MULTIPROC_DIR
  value: /tmp/visa-metrics
{{- if .Values.database.existingSecret }}
- name: VISA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: VISA_DATABASE_URL
{{- end }}
{{- end -}}

{{/* The migration hook's secret: its own copy made before it, or the existing secret. */}}
{{- define "visa.migrateSecretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-migrate-secrets" (include "visa.fullname" .)) -}}
{{- end -}}

{{- define "visa.envFrom" -}}
- secretRef:
    name: {{ include "visa.secretName" . }}
{{- end -}}

{{- define "visa.volumes" -}}
- name: config
  configMap:
    name: {{ include "visa.fullname" . }}-config
- name: data
  emptyDir: {}
{{- end -}}

{{- define "visa.volumeMounts" -}}
- name: config
  mountPath: /etc/visa
  readOnly: true
- name: data
  mountPath: /var/lib/visa
{{- end -}}

{{- define "visa.pod" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The settings file every visa process reads (/etc/visa/visa.toml). */}}
{{- define "visa.configToml" -}}
{{- $settings := deepCopy .Values.config -}}
{{- $_ := set $settings "base_url" .Values.baseUrl -}}
{{- $_ := set $settings "user_content_domain" .Values.userContentDomain -}}
{{- $_ := set $settings "data_dir" "/var/lib/visa" -}}
{{- $_ := set $settings "host" "0.0.0.0" -}}
{{- if .Values.database.url }}{{- $_ := set $settings "database_url" .Values.database.url -}}{{- end }}
{{- range $key, $value := $settings }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

[scheduler]
enabled_in_web = false
metrics_host = "0.0.0.0"
metrics_port = {{ .Values.scheduler.metricsPort }}

[gateway]
embedded = false
host = "0.0.0.0"
port = 8081

[database_pool]
size = {{ .Values.database.pool.size }}
max_overflow = {{ .Values.database.pool.maxOverflow }}
timeout_seconds = {{ .Values.database.pool.timeoutSeconds }}
recycle_seconds = {{ .Values.database.pool.recycleSeconds }}
{{- range $key, $value := $settings }}
{{- if and (kindIs "map" $value) $value }}

[{{ $key }}]
{{- range $k, $v := $value }}
{{ $k }} = {{ toJson $v }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
