{{/* Labels every object carries. */}}
{{- define "meshfed.labels" -}}
app.kubernetes.io/part-of: meshfed
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The image of every container. */}}
{{- define "meshfed.image" -}}
image: {{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end -}}

{{/* The pod security context: the image's nonroot user (65532). */}}
{{- define "meshfed.podSecurity" -}}
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The container security context. */}}
{{- define "meshfed.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* The agent and the gateway find each other, and the agent its
credentials and Lease, in meshfed-system. */}}
{{- define "meshfed.requireSystemNamespace" -}}
{{- if ne .Release.Namespace "meshfed-system" -}}
{{- fail (printf "the agent and the gateway must be installed in the namespace meshfed-system, not %q (helm install --namespace meshfed-system)" .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* A Service's type, nodePort and load balancer fields from values. */}}
{{- define "meshfed.serviceSpec" -}}
type: {{ .type }}
{{- if and (eq .type "LoadBalancer") .loadBalancerSourceRanges }}
loadBalancerSourceRanges:
{{- toYaml .loadBalancerSourceRanges | nindent 2 }}
{{- end }}
{{- end -}}
