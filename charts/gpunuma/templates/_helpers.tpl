{{/*
Names, labels, and the interface to the gpunuma process: every subcommand, environment variable,
port and path the manifests rely on is spelled here once ("gpunuma.interface"), so a renamed flag
changes one line.
*/}}

{{- define "gpunuma.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpunuma.fullname" -}}
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

{{/* Object names of each component (40 + "-operator" stays within 63 characters). */}}
{{- define "gpunuma.agent.fullname" -}}{{ include "gpunuma.fullname" . }}-agent{{- end -}}
{{- define "gpunuma.operator.fullname" -}}{{ include "gpunuma.fullname" . }}-operator{{- end -}}
{{- define "gpunuma.webhook.fullname" -}}{{ include "gpunuma.fullname" . }}-webhook{{- end -}}
{{- define "gpunuma.webhook.configurationName" -}}{{ include "gpunuma.fullname" . }}{{- end -}}
{{- define "gpunuma.webhook.secretName" -}}
{{- default (printf "%s-webhook-tls" (include "gpunuma.fullname" .)) .Values.webhook.certificate.secretName -}}
{{- end -}}
{{- define "gpunuma.webhook.certificateName" -}}{{ include "gpunuma.webhook.fullname" . }}{{- end -}}
{{- define "gpunuma.webhook.issuerName" -}}{{ include "gpunuma.webhook.fullname" . }}-selfsigned{{- end -}}
{{- define "gpunuma.webhook.caName" -}}{{ include "gpunuma.webhook.fullname" . }}-ca{{- end -}}

{{- define "gpunuma.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gpunuma.labels" -}}
helm.sh/chart: {{ include "gpunuma.chart" . }}
app.kubernetes.io/name: {{ include "gpunuma.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpunuma
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "agent"). */}}
{{- define "gpunuma.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpunuma.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpunuma.componentLabels" -}}
{{ include "gpunuma.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpunuma.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
An image reference from {registry, repository, tag, digest}: include with (dict "image" X "ctx" $).
The registry is the image's own, else global.imageRegistry; the digest wins over the tag; the tag
defaults to the chart's appVersion.
*/}}
{{- define "gpunuma.imageRef" -}}
{{- $global := .ctx.Values.global | default dict -}}
{{- $registry := .image.registry | default $global.imageRegistry | default "" | trimSuffix "/" -}}
{{- $repository := .image.repository -}}
{{- if $registry }}{{ $repository = printf "%s/%s" $registry $repository }}{{ end -}}
{{- if .image.digest -}}
{{ $repository }}@{{ .image.digest }}
{{- else -}}
{{ $repository }}:{{ default .ctx.Chart.AppVersion .image.tag }}
{{- end -}}
{{- end -}}

{{- define "gpunuma.image" -}}
{{ include "gpunuma.imageRef" (dict "image" .Values.image "ctx" .) }}
{{- end -}}

{{/* The init container image the webhook injects: launcher.image (the static numa-exec). */}}
{{- define "gpunuma.launcherImage" -}}
{{ include "gpunuma.imageRef" (dict "image" .Values.launcher.image "ctx" .) }}
{{- end -}}

{{/* A component's ServiceAccount: include with (dict "ctx" $ "component" "agent"). */}}
{{- define "gpunuma.serviceAccountName" -}}
{{- $account := (get .ctx.Values .component).serviceAccount -}}
{{- default (printf "%s-%s" (include "gpunuma.fullname" .ctx) .component) $account.name -}}
{{- end -}}

{{/* The ServiceAccount object of a component, unless serviceAccount.create is false. */}}
{{- define "gpunuma.serviceAccount" -}}
{{- $account := (get .ctx.Values .component).serviceAccount -}}
{{- if $account.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "gpunuma.serviceAccountName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "gpunuma.componentLabels" . | nindent 4 }}
  {{- $annotations := merge (dict) ($account.annotations | default dict) (.ctx.Values.commonAnnotations | default dict) }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .automount }}
---
{{- end -}}
{{- end -}}

{{/* The chart's env entries for a component's log level and format, then its extraEnv. */}}
{{- define "gpunuma.logEnv" -}}
{{- $component := get .ctx.Values .component -}}
{{- $i := include "gpunuma.interface" .ctx | fromYaml -}}
{{- with include "gpunuma.optionalEnv" (list $i.env.logLevel $component.logLevel) }}
{{ . }}
{{- end }}
{{- with include "gpunuma.optionalEnv" (list $i.env.logFormat $component.logFormat) }}
{{ . }}
{{- end }}
{{- with $component.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* topologySpreadConstraints with the component's selector filled in where a constraint has none. */}}
{{- define "gpunuma.topologySpreadConstraints" -}}
{{- $constraints := list -}}
{{- $selector := include "gpunuma.selectorLabels" . | fromYaml -}}
{{- range (get .ctx.Values .component).topologySpreadConstraints -}}
{{- $constraint := deepCopy . -}}
{{- if not $constraint.labelSelector -}}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $constraints = append $constraints $constraint -}}
{{- end -}}
{{- with $constraints -}}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
Namespaces the webhook is never called for: kube-system, kube-node-lease and our own always
(DESIGN §9), plus webhook.additionalExcludedNamespaces — which adds to these, never replaces them.
*/}}
{{- define "gpunuma.webhook.excludedNamespaces" -}}
{{- $always := list "kube-system" "kube-node-lease" .Release.Namespace -}}
{{- $excluded := concat $always .Values.webhook.additionalExcludedNamespaces | uniq -}}
{{- toJson $excluded -}}
{{- end -}}

{{/*
A true/false/"auto" value as "true" or "false", "auto" meaning Kubernetes 1.30 or later (where
matchConditions and ValidatingAdmissionPolicy are GA): include with (list $ VALUE).
*/}}
{{- define "gpunuma.fromKube130" -}}
{{- $setting := toString (index . 1) -}}
{{- if eq $setting "auto" -}}
{{- semverCompare ">=1.30.0-0" (index . 0).Capabilities.KubeVersion.Version | toString -}}
{{- else -}}
{{- $setting -}}
{{- end -}}
{{- end -}}

{{/* "true" when the chart installs its ValidatingAdmissionPolicies. */}}
{{- define "gpunuma.admissionPolicies" -}}
{{- include "gpunuma.fromKube130" (list . .Values.admissionPolicies) -}}
{{- end -}}

{{/* "true" when the MutatingWebhookConfiguration should carry matchConditions. */}}
{{- define "gpunuma.webhook.matchConditions" -}}
{{- include "gpunuma.fromKube130" (list . .Values.webhook.matchConditions) -}}
{{- end -}}

{{/*
One env entry, only when the value is set (not null): a value that defaults to null leaves the
setting's default to gpunuma itself, where it is defined once (gpunuma/settings.py).
Usage, in a container's env: {{- include "gpunuma.optionalEnv" (list NAME VALUE) | nindent 12 }}
*/}}
{{- define "gpunuma.optionalEnv" -}}
{{- $name := index . 0 -}}
{{- $value := index . 1 -}}
{{- if not (kindIs "invalid" $value) -}}
- {name: {{ $name }}, value: {{ $value | toString | quote }}}
{{- end -}}
{{- end -}}

{{/*
The gpunuma process as the manifests use it. Kept in one place for the components' owners:
subcommands, GPUNUMA_* variables (every flag of `gpunuma` reads one), ports and paths.
*/}}
{{- define "gpunuma.interface" -}}
subcommands:
  agent: agent
  operator: operator
  webhook: webhook
env:
  sysfsRoot: GPUNUMA_SYSFS_ROOT
  procfsRoot: GPUNUMA_PROCFS_ROOT
  backend: GPUNUMA_BACKEND
  interval: GPUNUMA_INTERVAL
  heartbeat: GPUNUMA_HEARTBEAT
  allocationsInterval: GPUNUMA_ALLOCATIONS_INTERVAL
  discoveryTimeout: GPUNUMA_DISCOVERY_TIMEOUT
  kubeletSocket: GPUNUMA_KUBELET_SOCKET
  listen: GPUNUMA_LISTEN
  gpuResources: GPUNUMA_GPU_RESOURCES
  gpuClaims: GPUNUMA_GPU_CLAIMS
  defaultPolicy: GPUNUMA_DEFAULT_POLICY
  launcherImage: GPUNUMA_LAUNCHER_IMAGE
  tlsCertFile: GPUNUMA_TLS_CERT_FILE
  tlsKeyFile: GPUNUMA_TLS_KEY_FILE
  namespace: GPUNUMA_NAMESPACE
  heartbeatInterval: GPUNUMA_HEARTBEAT_INTERVAL
  certificateMode: GPUNUMA_CERTIFICATES
  webhookService: GPUNUMA_WEBHOOK_SERVICE
  webhookSecret: GPUNUMA_WEBHOOK_SECRET
  webhookConfiguration: GPUNUMA_WEBHOOK_CONFIGURATION
  peeringName: GPUNUMA_PEERING_NAME
  staleAfterHeartbeats: GPUNUMA_STALE_AFTER
  podNamespaces: GPUNUMA_POD_NAMESPACES
  logFormat: GPUNUMA_LOG_FORMAT
  logLevel: GPUNUMA_LOG_LEVEL
  liveness: GPUNUMA_LIVENESS
  metricsListen: GPUNUMA_METRICS_LISTEN
  shutdownDelay: GPUNUMA_SHUTDOWN_DELAY
  cgroupRoot: GPUNUMA_CGROUP_ROOT
  cgroupBinding: GPUNUMA_CGROUP_BINDING
  cpuManagerState: GPUNUMA_CPU_MANAGER_STATE
  memoryInterval: GPUNUMA_MEMORY_INTERVAL
paths:
  hostSys: /host/sys
  hostProc: /host/proc
  hostSysCgroup: /host/sys/fs/cgroup
  hostCgroup: /host/cgroup
  cpuManagerState: /host/kubelet/cpu_manager_state
  tlsDir: /etc/gpunuma/tls
  mutate: /mutate
  mutateNamespace: /mutate-namespace
  healthz: /healthz
  readyz: /readyz
  metrics: /metrics
secretKeys:
  cert: tls.crt
  key: tls.key
  ca: ca.crt
certificateModes:
  operator: self-managed
  cert-manager: cert-manager
{{- end -}}

{{/* Restricted Pod Security profile: shared by the operator and the webhook. No UID is pinned: the
image's numeric USER satisfies runAsNonRoot, and platforms that assign UIDs per namespace
(OpenShift's restricted-v2) can do so. */}}
{{- define "gpunuma.restrictedPodSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gpunuma.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted contexts with a component's podSecurityContext / securityContext merged over
them (the user's keys win): include with (dict "ctx" $ "component" "webhook"). */}}
{{- define "gpunuma.podSecurityContext" -}}
{{- $defaults := include "gpunuma.restrictedPodSecurityContext" .ctx | fromYaml -}}
{{- toYaml (mustMergeOverwrite $defaults (deepCopy ((get .ctx.Values .component).podSecurityContext | default dict))) -}}
{{- end -}}

{{- define "gpunuma.containerSecurityContext" -}}
{{- $defaults := include "gpunuma.restrictedContainerSecurityContext" .ctx | fromYaml -}}
{{- toYaml (mustMergeOverwrite $defaults (deepCopy ((get .ctx.Values .component).securityContext | default dict))) -}}
{{- end -}}

{{- define "gpunuma.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{- /*
A hook's own ServiceAccount, ClusterRole and ClusterRoleBinding, created before the hook's workload
(weights -10 and -5) and deleted with it by the hook's delete policy. Arguments: ctx, name,
component, hook (the helm.sh/hook annotations) and rules (the ClusterRole's rules, a list).
*/ -}}
{{- define "gpunuma.hookAccess" -}}
{{- $labels := include "gpunuma.componentLabels" (dict "ctx" .ctx "component" .component) }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    {{- toYaml (merge (dict "helm.sh/hook-weight" "-10") .hook) | nindent 4 }}
automountServiceAccountToken: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ .name }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    {{- toYaml (merge (dict "helm.sh/hook-weight" "-10") .hook) | nindent 4 }}
rules:
  {{- toYaml .rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ .name }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    {{- toYaml (merge (dict "helm.sh/hook-weight" "-5") .hook) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ .name }}
subjects:
  - kind: ServiceAccount
    name: {{ .name }}
    namespace: {{ .ctx.Release.Namespace }}
{{- end -}}
