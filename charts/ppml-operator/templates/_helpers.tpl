{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "ppml-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name plus the chart name, unless one already contains the other
(`helm install ppml` and `helm install ppml-operator` both give "ppml-operator").
*/}}
{{- define "ppml-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else if hasPrefix .Release.Name $name }}
{{- $name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ppml-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "ppml-operator.labels" -}}
helm.sh/chart: {{ include "ppml-operator.chart" . }}
{{ include "ppml-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ppml-operator
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "ppml-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ppml-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ppml-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ppml-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: digest wins over tag; the tag defaults to appVersion. */}}
{{- define "ppml-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "ppml-operator.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtimeImage.repository (default .Chart.AppVersion .Values.runtimeImage.tag) }}
{{- end }}

{{/*
Name prefix of the cluster-scoped objects (ClusterRoles and bindings). The user roles keep their
documented names (ppml-viewer, ...), which is why the chart is installed once per cluster.
*/}}
{{- define "ppml-operator.clusterName" -}}
{{- include "ppml-operator.fullname" . }}
{{- end }}

{{/*
The identities the admission policies trust as the operator, as a CEL list literal: the chart's
ServiceAccount, plus admissionPolicies.extraOperatorUsernames (an operator run outside the
cluster under another identity, as `make demo` runs it).
*/}}
{{- define "ppml-operator.operatorUsernames" -}}
{{- $sa := printf "system:serviceaccount:%s:%s" .Release.Namespace (include "ppml-operator.serviceAccountName" .) }}
{{- prepend .Values.admissionPolicies.extraOperatorUsernames $sa | toJson }}
{{- end }}

{{/*
Annotations that keep an object on `helm uninstall` and out of Argo CD's prune, as the CRDs are
kept (crds.keep): the ledger guard outlives the operator, as the ledgers do.
*/}}
{{- define "ppml-operator.keepWithCrds" -}}
{{- if .Values.crds.keep -}}
annotations:
  helm.sh/resource-policy: keep
  argocd.argoproj.io/sync-options: Delete=false,Prune=false
{{- end }}
{{- end }}
