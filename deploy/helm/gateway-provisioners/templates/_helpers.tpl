{{/* Name of the release's objects: <release>-gateway-provisioners, or the release name when it already says so. */}}
{{- define "gp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object of the release. */}}
{{- define "gp.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* What selects the server's pod. */}}
{{- define "gp.serverSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{/* What selects this release's kernel pods: the provisioner's own labels plus the one the kernel specs add. */}}
{{- define "gp.kernelSelector" -}}
app.kubernetes.io/managed-by: gateway-provisioners
app.kubernetes.io/component: kernel
gateway-provisioners.io/server: {{ include "gp.fullname" . }}
{{- end -}}

{{/* Namespace of the kernel pods. */}}
{{- define "gp.kernelNamespace" -}}
{{- .Values.kernels.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* Name of the server's ServiceAccount. */}}
{{- define "gp.serviceAccount" -}}
{{- include "gp.fullname" . -}}
{{- end -}}

{{/* The kernel port range as "lower upper" after checking it: a NetworkPolicy needs fixed bounds. */}}
{{- define "gp.portBounds" -}}
{{- $range := toString .Values.kernels.portRange -}}
{{- $parts := splitList ".." $range -}}
{{- if ne (len $parts) 2 -}}
{{- fail (printf "kernels.portRange %q must be \"lower..upper\", e.g. \"50000..50999\"" $range) -}}
{{- end -}}
{{- $lower := index $parts 0 | atoi -}}
{{- $upper := index $parts 1 | atoi -}}
{{- if or (lt $lower 1024) (gt $upper 65535) (lt (sub $upper $lower) 5) -}}
{{- fail (printf "kernels.portRange %q: need 1024 <= lower, upper <= 65535 and at least 6 ports" $range) -}}
{{- end -}}
{{- printf "%d %d" $lower $upper -}}
{{- end -}}
