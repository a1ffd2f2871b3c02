{{/* Chart name (app.kubernetes.io/name). */}}
{{- define "sweep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every object: the release name when it already contains the chart name,
else "<release>-sweep". `sweep manifest` names objects the same way (runner/kube/manifests.py).
*/}}
{{- define "sweep.fullname" -}}
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

{{- define "sweep.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's objects (sweep status/logs/cancel use the instance). */}}
{{- define "sweep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sweep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sweep.labels" -}}
helm.sh/chart: {{ include "sweep.chart" . }}
{{ include "sweep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sweep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sweep.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sweep.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sweep.configMapName" -}}
{{- default (include "sweep.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
Does a key name hold a credential? "true" if so, "" if not. A copy of the one rule,
runner.secrets.is_secret_name, held to it by tests/test_secrets.py: split camelCase,
lowercase, take the [a-z0-9] words; a word key/secret/token/password/credential/session
makes a secret unless the last word makes a reference (*_name, *_arn, *_id) or a word
is "from". ("İ" lowercases to "i" plus a combining dot in Python, "i" in Go: spelled out.)
*/}}
{{- define "sweep.isSecretName" -}}
{{- $k := regexReplaceAll "([a-z0-9])([A-Z])" (toString .) "${1}_${2}" | replace "\u0130" "i_" | lower }}
{{- $parts := regexFindAll "[a-z0-9]+" $k -1 }}
{{- if $parts }}
{{- $last := last $parts }}
{{- if and (not (has $last (list "name" "names" "ref" "from" "file" "path" "arn" "id"))) (not (has "from" $parts)) }}
{{- $found := false }}
{{- range $parts }}
{{- if has . (list "secret" "key" "token" "password" "passwd" "credential" "credentials" "session" "webhook") }}{{ $found = true }}{{ end }}
{{- end }}
{{- if $found }}true{{ end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fail on literal credentials anywhere under a map or list (storage_options), as
runner.secrets.literal_secrets finds them. Arg: dict "path" "obj".
*/}}
{{- define "sweep.noLiteralSecrets" -}}
{{- $path := .path }}
{{- if kindIs "map" .obj }}
{{- range $k, $v := .obj }}
{{- if kindIs "string" $v }}
{{- if and $v (include "sweep.isSecretName" $k) }}
{{- fail (printf "%s.%s holds a literal credential: put it in a Secret and set s3Secret to its name" $path $k) }}
{{- end }}
{{- else }}
{{- include "sweep.noLiteralSecrets" (dict "path" (printf "%s.%s" $path $k) "obj" $v) }}
{{- end }}
{{- end }}
{{- else if kindIs "slice" .obj }}
{{- range $i, $v := .obj }}
{{- include "sweep.noLiteralSecrets" (dict "path" (printf "%s[%d]" $path $i) "obj" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Fail on env entries with a literal credential value. Arg: dict "path" "env". */}}
{{- define "sweep.noLiteralEnvSecrets" -}}
{{- $path := .path }}
{{- range .env }}
{{- if and .value (include "sweep.isSecretName" .name) }}
{{- fail (printf "%s: env %s holds a literal credential: use valueFrom.secretKeyRef or s3Secret" $path .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Fail when Helm turned a key like `n:` of a values file into "false" (YAML 1.1). */}}
{{- define "sweep.noBooleanKeys" -}}
{{- $path := .path }}
{{- range $k, $v := .obj }}
{{- if has $k (list "true" "false") }}
{{- fail (printf "%s has a key %q: Helm reads keys like n, y, on, off in values files as booleans; quote the key (\"n\": 1000) or pass the spec with --set-file specYaml=spec.yaml" $path $k) }}
{{- end }}
{{- if kindIs "map" $v }}
{{- include "sweep.noBooleanKeys" (dict "path" (printf "%s.%s" $path $k) "obj" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The sweep spec as the runner reads it: values spec over specYaml, kubernetes cluster. */}}
{{- define "sweep.spec" -}}
{{- $spec := dict }}
{{- if .Values.specYaml }}
{{- /* Helm reads YAML 1.1 booleans (n, y, on, off, ...) as keys true/false; the runner
     (PyYAML) does not for n/y: quote such keys first so `n: 1000` stays n. */}}
{{- $bools := "n|N|y|Y|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF" }}
{{- $text := regexReplaceAll (printf "(?m)^(\\s*(?:-\\s+)?)(%s)(\\s*):" $bools) .Values.specYaml "${1}\"${2}\"${3}:" }}
{{- $text = regexReplaceAll (printf "([{,]\\s*)(%s)(\\s*):" $bools) $text "${1}\"${2}\"${3}:" }}
{{- $spec = fromYaml $text }}
{{- if hasKey $spec "Error" }}
{{- fail (printf "specYaml is not a YAML mapping: %s" (get $spec "Error")) }}
{{- end }}
{{- end }}
{{- include "sweep.noBooleanKeys" (dict "path" "spec" "obj" .Values.spec) }}
{{- $spec = mergeOverwrite $spec (deepCopy .Values.spec) }}
{{- if not $spec.function }}
{{- fail "spec.function is required: set spec (a map) or specYaml (--set-file specYaml=sweep.yaml)" }}
{{- end }}
{{- if not $spec.output }}
{{- fail "spec.output is required, e.g. s3://bucket/sweeps/my-sweep" }}
{{- end }}
{{- $output := toString $spec.output }}
{{- if or (not (regexMatch "^[a-zA-Z][a-zA-Z0-9+.-]*://" $output)) (regexMatch "^(file|local|memory)://" $output) }}
{{- fail (printf "spec.output %q is a local path; on Kubernetes the runner and the workers need shared storage: use s3://bucket/prefix (or gs://, abfs://)" $output) }}
{{- end }}
{{- include "sweep.noLiteralSecrets" (dict "path" "spec.storage_options" "obj" (default dict $spec.storage_options)) }}
{{- with (default dict $spec.notify).webhook }}{{ if not (hasPrefix "${" (toString .)) }}
{{- fail "spec.notify.webhook holds a literal URL (it often embeds a token): put it in the Secret named by s3Secret and write webhook: ${VAR}" }}
{{- end }}{{ end }}
{{- $cluster := omit (default dict $spec.cluster) "address" "workers" }}
{{- $kube := omit (default dict (get $cluster "kubernetes")) "namespace" }}
{{- $_ := set $kube "worker_template" "/etc/sweep/worker-template.yaml" }}
{{- $_ := set $kube "scheduler_template" "/etc/sweep/scheduler-template.yaml" }}
{{- with .Values.s3Secret }}{{ $_ := set $kube "env_from_secret" . }}{{ end }}
{{- $d := .Values.dask }}
{{- if not (kindIs "invalid" $d.minWorkers) }}{{ $_ := set $kube "min_workers" $d.minWorkers }}{{ end }}
{{- if not (kindIs "invalid" $d.maxWorkers) }}{{ $_ := set $kube "max_workers" $d.maxWorkers }}{{ end }}
{{- if not (kindIs "invalid" $d.partitionsPerWorker) }}{{ $_ := set $kube "partitions_per_worker" $d.partitionsPerWorker }}{{ end }}
{{- if not (kindIs "invalid" $d.workerThreads) }}{{ $_ := set $kube "worker_threads" $d.workerThreads }}{{ end }}
{{- if not (kindIs "invalid" $d.startupTimeout) }}{{ $_ := set $kube "startup_timeout" $d.startupTimeout }}{{ end }}
{{- $q := .Values.kueue.queueName }}
{{- if not (kindIs "invalid" $q) }}{{ if $q }}{{ $_ := set $kube "queue" $q }}{{ else }}{{ $_ := unset $kube "queue" }}{{ end }}{{ end }}
{{- $_ := set $kube "operator" (eq (include "sweep.operator" (dict "ctx" . "requested" (get $kube "operator"))) "true") }}
{{- $_ := set $cluster "kind" "kubernetes" }}
{{- $_ := set $cluster "kubernetes" $kube }}
{{- $_ := set $spec "cluster" $cluster }}
{{- toYaml $spec }}
{{- end }}

{{/* The Kueue LocalQueue of the sweep ("" for none): kueue.queueName, else the spec's. */}}
{{- define "sweep.queue" -}}
{{- if .Values.existingConfigMap }}
{{- .Values.kueue.queueName | default "" }}
{{- else }}
{{- (include "sweep.spec" . | fromYaml).cluster.kubernetes.queue | default "" }}
{{- end }}
{{- end }}

{{/*
"true" or "false": run the Dask cluster through the Dask operator? dask.operator, else the
spec's cluster.kubernetes.operator (arg "requested"), else auto; auto means the operator
where the cluster serves its DaskCluster resource (as `sweep submit` decides; offline,
`helm template` sees none). role.yaml renders the Role for the same answer.
Args: dict "ctx" . "requested" <spec's value or nil>.
*/}}
{{- define "sweep.operator" -}}
{{- $want := .requested }}
{{- if not (kindIs "invalid" .ctx.Values.dask.operator) }}{{ $want = .ctx.Values.dask.operator }}{{ end }}
{{- if or (kindIs "invalid" $want) (eq (toString $want) "auto") }}
{{- .ctx.Capabilities.APIVersions.Has "kubernetes.dask.org/v1/DaskCluster" }}
{{- else }}
{{- eq (toString $want) "true" }}
{{- end }}
{{- end }}

{{/* "true" or "false": does this release's runner use the Dask operator (sweep.operator
for dask.operator, else the spec's; with existingConfigMap, auto)? */}}
{{- define "sweep.usesOperator" -}}
{{- $requested := "auto" }}
{{- if not .Values.existingConfigMap }}
{{- $requested = (include "sweep.spec" . | fromYaml).cluster.kubernetes.operator }}
{{- end }}
{{- include "sweep.operator" (dict "ctx" . "requested" $requested) }}
{{- end }}

{{/*
A Dask pod template: the default (files/<role>-pod.yaml) or values' podTemplate, with the
values' overrides. Arg: dict "ctx" . "role" "worker"|"scheduler".
*/}}
{{- define "sweep.podTemplate" -}}
{{- $ctx := .ctx }}
{{- $v := get $ctx.Values.dask .role }}
{{- $pod := dict }}
{{- if $v.podTemplate }}
{{- $pod = deepCopy $v.podTemplate }}
{{- else }}
{{- $pod = $ctx.Files.Get (printf "files/%s-pod.yaml" .role) | fromYaml }}
{{- end }}
{{- $podSpec := $pod.spec }}
{{- $container := first $podSpec.containers }}
{{- range $podSpec.containers }}{{ if eq .name $.role }}{{ $container = . }}{{ end }}{{ end }}
{{- with $v.resources }}{{ $_ := set $container "resources" (deepCopy .) }}{{ end }}
{{- with $v.nodeSelector }}{{ $_ := set $podSpec "nodeSelector" (deepCopy .) }}{{ end }}
{{- with $v.tolerations }}{{ $_ := set $podSpec "tolerations" (deepCopy .) }}{{ end }}
{{- with $v.affinity }}{{ $_ := set $podSpec "affinity" (deepCopy .) }}{{ end }}
{{- if eq .role "worker" }}
{{- with $v.env }}{{ $_ := set $container "env" (concat (default list $container.env) .) }}{{ end }}
{{- with $v.serviceAccountName }}
{{- $_ := set $podSpec "serviceAccountName" . }}
{{- $_ := unset $podSpec "automountServiceAccountToken" }}
{{- end }}
{{- end }}
{{- with $ctx.Values.imagePullSecrets }}
{{- $secrets := list }}
{{- range . }}{{ $secrets = append $secrets (dict "name" .) }}{{ end }}
{{- $_ := set $podSpec "imagePullSecrets" $secrets }}
{{- end }}
{{- range $podSpec.containers }}
{{- include "sweep.noLiteralEnvSecrets" (dict "path" (printf "dask.%s" $.role) "env" (default list .env)) }}
{{- end }}
{{- toYaml $pod }}
{{- end }}
