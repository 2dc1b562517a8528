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
