{{/*
Names. Kubernetes names are at most 63 characters; a StatefulSet's pods add "-<ordinal>" and
its controller-revision-hash label adds more, so the base name is cut to 40 characters.
*/}}
{{- define "shardkv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "shardkv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shardkv.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "shardkv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "shardkv.labels" -}}
helm.sh/chart: {{ include "shardkv.chart" . }}
app.kubernetes.io/name: {{ include "shardkv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shardkv
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the release; add app.kubernetes.io/component to pick one role. */}}
{{- define "shardkv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shardkv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* metadata.annotations from commonAnnotations; include it right after the labels. */}}
{{- define "shardkv.annotations" -}}
{{- with .Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/* The image reference: registry/repository:tag or @digest. */}}
{{- define "shardkv.image" -}}
{{- $registry := .Values.image.registry -}}
{{- if .Values.global.imageRegistry -}}
{{- $registry = .Values.global.imageRegistry -}}
{{- end -}}
{{- $repository := .Values.image.repository -}}
{{- if $registry -}}
{{- $repository = printf "%s/%s" $registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "shardkv.imagePullSecrets" -}}
{{- $secrets := concat .Values.global.imagePullSecrets .Values.image.pullSecrets | uniq -}}
{{- if $secrets }}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "shardkv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shardkv.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shardkv.secretName" -}}
{{- default (include "shardkv.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Coordinators: StatefulSet, headless Service, and each member's stable DNS name. */}}
{{- define "shardkv.coordinator.fullname" -}}
{{- printf "%s-coordinator" (include "shardkv.fullname" .) -}}
{{- end -}}

{{- define "shardkv.coordinator.headless" -}}
{{- printf "%s-coordinator-hl" (include "shardkv.fullname" .) -}}
{{- end -}}

{{- define "shardkv.coordinator.domain" -}}
{{- printf "%s.%s.svc.%s" (include "shardkv.coordinator.headless" .) (include "shardkv.namespace" .) .Values.clusterDomain -}}
{{- end -}}

{{/*
Every coordinator as "ID=HOST", comma-separated: the id is the pod name, the host its DNS name
under the headless Service (it resolves before the pod is ready: publishNotReadyAddresses).
The start script takes its own entry out to get --peers.
*/}}
{{- define "shardkv.coordinator.members" -}}
{{- $name := include "shardkv.coordinator.fullname" . -}}
{{- $domain := include "shardkv.coordinator.domain" . -}}
{{- $members := list -}}
{{- range $i := until (int .Values.coordinators.replicas) -}}
{{- $members = append $members (printf "%s-%d=%s-%d.%s" $name $i $name $i $domain) -}}
{{- end -}}
{{- join "," $members -}}
{{- end -}}

{{/* Every coordinator's HTTP URL, comma-separated: what nodes and clients start from. */}}
{{- define "shardkv.coordinator.urls" -}}
{{- $name := include "shardkv.coordinator.fullname" . -}}
{{- $domain := include "shardkv.coordinator.domain" . -}}
{{- $port := int .Values.coordinators.containerPorts.http -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.coordinators.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s:%d" $name $i $domain $port) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/* Storage nodes: one StatefulSet per shard, all under one headless Service. */}}
{{- define "shardkv.node.fullname" -}}
{{- printf "%s-node" (include "shardkv.fullname" .) -}}
{{- end -}}

{{- define "shardkv.node.headless" -}}
{{- printf "%s-node-hl" (include "shardkv.fullname" .) -}}
{{- end -}}

{{- define "shardkv.node.domain" -}}
{{- printf "%s.%s.svc.%s" (include "shardkv.node.headless" .) (include "shardkv.namespace" .) .Values.clusterDomain -}}
{{- end -}}

{{/* A majority of n: what Raft (coordinators) and majority writes (a shard) need up. */}}
{{- define "shardkv.majority" -}}
{{- add (div (int .) 2) 1 -}}
{{- end -}}

{{/*
Pod disruption budget spec. Arguments: dict "pdb" (values) "members" (int).
maxUnavailable wins when set; else minAvailable, defaulting to a majority of the members.
*/}}
{{- define "shardkv.pdbSpec" -}}
{{- if not (eq (toString .pdb.maxUnavailable) "") }}
maxUnavailable: {{ .pdb.maxUnavailable }}
{{- else if not (eq (toString .pdb.minAvailable) "") }}
minAvailable: {{ .pdb.minAvailable }}
{{- else if and .oneAtATime (gt (int .members) 1) }}
{{- /* Storage shards: one member down or not caught up (not Ready) at a time. */}}
maxUnavailable: 1
{{- else }}
minAvailable: {{ include "shardkv.majority" .members }}
{{- end }}
{{- end -}}

{{/*
Affinity from presets, Bitnami style. Arguments: dict "component" (values of the role)
"selector" (labels that identify the pods to keep apart).
*/}}
{{- define "shardkv.affinity" -}}
{{- $values := .component -}}
{{- if $values.affinity -}}
{{- toYaml $values.affinity -}}
{{- else -}}
{{- $podAnti := "" -}}
{{- if eq $values.podAntiAffinityPreset "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 1
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml .selector | nindent 12 }}
{{- else if eq $values.podAntiAffinityPreset "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- toYaml .selector | nindent 10 }}
{{- end }}
{{- with $values.nodeAffinityPreset }}
{{- if and .type .key .values }}
nodeAffinity:
  {{- if eq .type "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          - key: {{ .key | quote }}
            operator: In
            values:
              {{- toYaml .values | nindent 14 }}
  {{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 1
      preference:
        matchExpressions:
          - key: {{ .key | quote }}
            operator: In
            values:
              {{- toYaml .values | nindent 14 }}
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* An HTTP probe. Arguments: dict "probe" (values) "path" "port" (name). */}}
{{- define "shardkv.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
successThreshold: {{ .probe.successThreshold }}
{{- end -}}

{{- define "shardkv.podSecurityContext" -}}
{{- if .Values.podSecurityContext.enabled }}
securityContext:
  {{- omit .Values.podSecurityContext "enabled" | toYaml | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "shardkv.containerSecurityContext" -}}
{{- if .Values.containerSecurityContext.enabled }}
securityContext:
  {{- omit .Values.containerSecurityContext "enabled" | toYaml | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Volume claim template or emptyDir for /data. Arguments: dict "persistence" (values)
"labels" (selector labels of the pods) "root" (the top context).
*/}}
{{- define "shardkv.volumeClaimTemplates" -}}
{{- if .persistence.enabled }}
volumeClaimTemplates:
  - apiVersion: v1
    kind: PersistentVolumeClaim
    metadata:
      name: data
      labels:
        {{- toYaml .labels | nindent 8 }}
      {{- with .persistence.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      accessModes:
        {{- toYaml .persistence.accessModes | nindent 8 }}
      {{- if .persistence.storageClass }}
      {{- if eq "-" .persistence.storageClass }}
      storageClassName: ""
      {{- else }}
      storageClassName: {{ .persistence.storageClass | quote }}
      {{- end }}
      {{- end }}
      resources:
        requests:
          storage: {{ .persistence.size | quote }}
{{- end }}
{{- end -}}

{{/* Checks of the values that a schema cannot express. */}}
{{- define "shardkv.validateValues" -}}
{{- $replicas := int .Values.coordinators.replicas -}}
{{- if eq (mod $replicas 2) 0 -}}
{{- fail (printf "coordinators.replicas must be odd (1, 3, 5, ...): %d members tolerate no more failures than %d" $replicas (sub $replicas 1)) -}}
{{- end -}}
{{- if and (not .Values.auth.existingSecret) (or (and .Values.auth.adminToken (lt (len .Values.auth.adminToken) 16)) (and .Values.auth.raftPassword (lt (len .Values.auth.raftPassword) 16))) -}}
{{- fail "auth.adminToken and auth.raftPassword must be at least 16 characters (leave them empty for random ones)" -}}
{{- end -}}
{{- end -}}

{{- /* Who may open HTTP connections: anyone, or this release's pods and labelled clients. */}}
{{- define "shardkv.networkPolicy.httpFrom" -}}
{{- if not .Values.networkPolicy.allowExternal }}
from:
  - podSelector:
      matchLabels:
        {{- include "shardkv.selectorLabels" . | nindent 8 }}
  - podSelector:
      matchLabels:
        {{ printf "%s-client" (include "shardkv.fullname" .) }}: "true"
{{- end }}
{{- end -}}
