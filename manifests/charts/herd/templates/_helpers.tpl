{{/*
Names. The chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "herd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: the release name when it already contains the chart name (release
"herd" gives herd-exporter, herd-responder), else <release>-<chart>. Truncated so that the longest
suffix (-exporter-audit-token, 21 characters) still fits a 63-character name.
*/}}
{{- define "herd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Call with (dict "ctx" $ "component" "exporter").
*/}}
{{- define "herd.labels" -}}
helm.sh/chart: {{ include "herd.chart" .ctx }}
{{ include "herd.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: herd
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: immutable in a Deployment, so nothing that changes between upgrades.
*/}}
{{- define "herd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herd.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "herd.exporter.fullname" -}}
{{- printf "%s-exporter" (include "herd.fullname" .) }}
{{- end }}

{{- define "herd.exporter.auditServiceName" -}}
{{- printf "%s-exporter-audit" (include "herd.fullname" .) }}
{{- end }}

{{- define "herd.responder.fullname" -}}
{{- printf "%s-responder" (include "herd.fullname" .) }}
{{- end }}

{{- define "herd.exporter.serviceAccountName" -}}
{{- if .Values.exporter.serviceAccount.create }}
{{- default (include "herd.exporter.fullname" .) .Values.exporter.serviceAccount.name }}
{{- else }}
{{- required "exporter.serviceAccount.name is required when exporter.serviceAccount.create is false" .Values.exporter.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herd.responder.serviceAccountName" -}}
{{- if .Values.responder.serviceAccount.create }}
{{- default (include "herd.responder.fullname" .) .Values.responder.serviceAccount.name }}
{{- else }}
{{- required "responder.serviceAccount.name is required when responder.serviceAccount.create is false" .Values.responder.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The responder's --config: responder.config with measurement.ownerClusterRole defaulted to the
responder's own ClusterRole, which owns the measurement FlowSchemas (uninstalling deletes them).
*/}}
{{- define "herd.responder.config" -}}
{{- $cfg := deepCopy .Values.responder.config }}
{{- $m := get $cfg "measurement" | default dict }}
{{- if not (get $m "ownerClusterRole") }}
{{- $_ := set $m "ownerClusterRole" (include "herd.responder.fullname" .) }}
{{- end }}
{{- $_ := set $cfg "measurement" $m }}
{{- toYaml $cfg }}
{{- end }}

{{- define "herd.responder.leaseName" -}}
{{- default (include "herd.responder.fullname" .) .Values.responder.leaderElection.name }}
{{- end }}

{{- define "herd.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The Secret holding the audit listener's serving certificate.
*/}}
{{- define "herd.exporter.auditTLSSecretName" -}}
{{- if eq .Values.exporter.audit.tls.mode "secret" }}
{{- required "exporter.audit.tls.secretName is required when exporter.audit.tls.mode is secret" .Values.exporter.audit.tls.secretName }}
{{- else }}
{{- printf "%s-audit-tls" (include "herd.fullname" .) }}
{{- end }}
{{- end }}

{{- define "herd.exporter.auditTokenSecretName" -}}
{{- default (printf "%s-audit-token" (include "herd.fullname" .)) .Values.exporter.audit.bearerToken.existingSecret }}
{{- end }}

{{- define "herd.responder.tokenSecretName" -}}
{{- default (printf "%s-responder-token" (include "herd.fullname" .)) .Values.responder.web.bearerToken.existingSecret }}
{{- end }}

{{/*
The audit certificate's DNS names: the audit Service's names, then the user's.
*/}}
{{- define "herd.exporter.auditDNSNames" -}}
{{- $svc := include "herd.exporter.auditServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) }}
{{- toJson (concat $names .Values.exporter.audit.tls.dnsNames | uniq) }}
{{- end }}

{{- define "herd.exporter.auditIPAddresses" -}}
{{- $ips := .Values.exporter.audit.tls.ipAddresses }}
{{- with .Values.exporter.audit.service.clusterIP }}
{{- if ne . "None" }}
{{- $ips = prepend $ips . }}
{{- end }}
{{- end }}
{{- toJson ($ips | uniq) }}
{{- end }}

{{/*
A value kept across upgrades: the base64 data of key in an existing Secret, else a new random token.
Call with (dict "ctx" $ "name" "secret" "key" "token").
*/}}
{{- define "herd.keptToken" -}}
{{- $old := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $old $old.data (hasKey $old.data .key) }}
{{- index $old.data .key }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}

{{/*
The exporter-toolkit web config of the audit listener (--audit.web-config.file).
*/}}
{{- define "herd.exporter.auditWebConfig" -}}
{{- $a := .Values.exporter.audit }}
{{- if ne $a.tls.mode "none" }}
tls_server_config:
  cert_file: /etc/herd/audit-tls/tls.crt
  key_file: /etc/herd/audit-tls/tls.key
  min_version: TLS12
  {{- if $a.clientCA.secretName }}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: /etc/herd/audit-client-ca/{{ $a.clientCA.key }}
  {{- with $a.clientCA.allowedSANs }}
  client_allowed_sans:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The exporter-toolkit web config of a metrics/webhook listener (--web.config.file): TLS from its
tlsSecretName and, where the values have them (the exporter's), client certificates and basic auth.
Call with the program's web values; renders nothing without TLS.
*/}}
{{- define "herd.webConfig" -}}
{{- if .tlsSecretName }}
tls_server_config:
  cert_file: /etc/herd/web-tls/tls.crt
  key_file: /etc/herd/web-tls/tls.key
  min_version: TLS12
  {{- with .clientCA }}
  {{- if .secretName }}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: /etc/herd/web-client-ca/{{ .key }}
  {{- with .allowedSANs }}
  client_allowed_sans:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- end }}
{{- with .basicAuthUsers }}
basic_auth_users:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"true" when the exporter's metrics listener requires a client certificate or basic auth: its probes
then open a TCP connection, since a kubelet presents neither.
*/}}
{{- define "herd.exporter.webAuth" -}}
{{- $w := .Values.exporter.web }}
{{- if or $w.clientCA.secretName $w.basicAuthUsers }}true{{ end }}
{{- end }}

{{/*
Default affinity: prefer one replica per node. Call with (dict "ctx" $ "component" "exporter" "affinity" .Values.exporter.affinity).
*/}}
{{- define "herd.affinity" -}}
{{- if .affinity }}
{{- toYaml .affinity }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "herd.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}

{{/*
Checks that fail the render with a message saying what to change.
*/}}
{{- define "herd.validate" -}}
{{- $a := .Values.exporter.audit }}
{{- if and .Values.exporter.enabled (not $a.insecure) (not $a.bearerToken.enabled) (not $a.clientCA.secretName) }}
{{- fail "exporter.audit: no authentication: enable bearerToken, set clientCA.secretName, or set insecure: true to accept unauthenticated audit events" }}
{{- end }}
{{- if and .Values.exporter.enabled (eq $a.tls.mode "none") (not $a.insecure) }}
{{- fail "exporter.audit.tls.mode none serves plain http: the apiserver sends bearer tokens only over https and client certificates need TLS; choose generate, secret or certManager, or set exporter.audit.insecure: true" }}
{{- end }}
{{- if and .Values.exporter.enabled (eq $a.tls.mode "certManager") (not $a.tls.certManager.issuerRef.name) }}
{{- fail "exporter.audit.tls.certManager.issuerRef.name is required when exporter.audit.tls.mode is certManager" }}
{{- end }}
{{- $w := .Values.exporter.web }}
{{- if and .Values.exporter.enabled (or $w.clientCA.secretName $w.basicAuthUsers) (not $w.tlsSecretName) }}
{{- fail "exporter.web.clientCA and exporter.web.basicAuthUsers need exporter.web.tlsSecretName: client certificates need TLS, and a password must not cross the network in clear" }}
{{- end }}
{{- if and .Values.responder.enabled (not .Values.responder.web.insecureNoAuth) (not .Values.responder.web.bearerToken.enabled) }}
{{- fail "responder.web: no authentication: enable bearerToken or set insecureNoAuth: true" }}
{{- end }}
{{- if and .Values.responder.enabled (not .Values.responder.config.prometheus.url) }}
{{- fail "responder.config.prometheus.url is required: the responder re-verifies every alert from Prometheus before it acts" }}
{{- end }}
{{- end }}
