{{/* Chart name, overridable. */}}
{{- define "bayeux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name: the release name alone if it contains the chart name. */}}
{{- define "bayeux.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bayeux.nodeName" -}}{{ include "bayeux.fullname" . | trunc 58 | trimSuffix "-" }}-node{{- end }}
{{- define "bayeux.gossipName" -}}{{ include "bayeux.fullname" . | trunc 56 | trimSuffix "-" }}-gossip{{- end }}
{{- define "bayeux.apiName" -}}{{ include "bayeux.fullname" . | trunc 59 | trimSuffix "-" }}-api{{- end }}
{{- define "bayeux.redisName" -}}{{ include "bayeux.fullname" . | trunc 57 | trimSuffix "-" }}-redis{{- end }}
{{- define "bayeux.gossipKeySecret" -}}{{ default (printf "%s-gossip-key" (include "bayeux.fullname" .)) .Values.cluster.gossipKey.existingSecret }}{{- end }}
{{- define "bayeux.clusterTLSSecret" -}}{{ default (printf "%s-cluster-tls" (include "bayeux.fullname" .)) .Values.cluster.tls.existingSecret }}{{- end }}

{{/* Labels on every object; $component is "node" or "redis". */}}
{{- define "bayeux.labels" -}}
{{ include "bayeux.selectorLabels" . }}
app.kubernetes.io/part-of: bayeux
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels (immutable): name, instance, component. */}}
{{- define "bayeux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bayeux.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The node image: repository:tag, or repository@digest. */}}
{{- define "bayeux.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* BAYEUX_REDIS for the chosen mode (not used with redis.urlSecret). */}}
{{- define "bayeux.redisURL" -}}
{{- $r := .Values.redis }}
{{- if eq $r.mode "bundled" }}
{{- printf "redis://%s:6379" (include "bayeux.redisName" .) }}
{{- else if eq $r.mode "sentinel" }}
{{- if or (empty $r.sentinel.hosts) (empty $r.sentinel.masterName) }}{{ fail "redis.mode sentinel needs redis.sentinel.hosts and redis.sentinel.masterName (or redis.urlSecret)" }}{{ end }}
{{- printf "%s://%s/%s" (ternary "rediss+sentinel" "redis+sentinel" $r.sentinel.tls) (join "," $r.sentinel.hosts) $r.sentinel.masterName }}{{ if $r.sentinel.db }}?db={{ $r.sentinel.db }}{{ end }}
{{- else if eq $r.mode "cluster" }}
{{- if empty $r.cluster.nodes }}{{ fail "redis.mode cluster needs redis.cluster.nodes (or redis.urlSecret)" }}{{ end }}
{{- printf "%s://%s" (ternary "rediss+cluster" "redis+cluster" $r.cluster.tls) (join "," $r.cluster.nodes) }}{{ if ne (int $r.cluster.partitions) 64 }}?partitions={{ $r.cluster.partitions }}{{ end }}
{{- else if eq $r.mode "external" }}
{{- if empty $r.external.url }}{{ fail "redis.mode external needs redis.external.url (or redis.urlSecret)" }}{{ end }}
{{- $r.external.url }}
{{- else }}
{{- fail (printf "redis.mode %q: want bundled, sentinel, cluster or external" $r.mode) }}
{{- end }}
{{- end }}
