"""Kubernetes: pod templates, DaskCluster specs, runner manifests and submit/status/logs/cancel."""
