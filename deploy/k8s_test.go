package deploy

import (
	"path/filepath"
	"testing"
)

// checks are the semantic checks every rendering passes, kustomize or Helm.
var checks = []struct {
	name string
	fn   func(*testing.T, *render)
}{
	{"objects", checkObjects},
	{"workload selectors", checkWorkloadSelectors},
	{"services", checkServices},
	{"probes", checkProbes},
	{"node deployment", checkNodeDeployment},
	{"node env", checkNodeEnv},
	{"security", checkSecurity},
	{"redis", checkRedis},
	{"PDB and HPA", checkPDBAndHPA},
	{"network policies", checkNetworkPolicies},
	{"ingress", checkIngress},
	{"service monitor", checkServiceMonitor},
}

func runChecks(t *testing.T, r *render) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) { c.fn(t, r) })
	}
}

// baseKinds are the objects of the kustomize base.
var baseKinds = []string{
	"ConfigMap/" + nodeName,
	"Deployment/" + nodeName,
	"Service/" + clientSvc,
	"Service/" + gossipSvc,
	"Service/" + apiSvc,
	"PodDisruptionBudget/" + nodeName,
	"HorizontalPodAutoscaler/" + nodeName,
	"StatefulSet/" + redisName,
	"Service/" + redisName,
	"NetworkPolicy/" + nodeName,
	"NetworkPolicy/" + redisName,
}

// TestK8s renders the kustomize base, and the production example that adds
// the optional components (Ingress, ServiceMonitor), offline, and runs
// every check on each.
func TestK8s(t *testing.T) {
	dir := filepath.Join(root(t), "deploy", "k8s")
	for _, tt := range []struct {
		name  string
		dir   string
		kinds []string
	}{
		{"base", dir, baseKinds},
		{"production example", filepath.Join(root(t), "deploy", "k8s-production"), append([]string{
			"Ingress/" + clientSvc,
			"ServiceMonitor/" + nodeName,
		}, baseKinds...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &render{
				name:            tt.name,
				m:               decodeManifests(t, renderKustomization(t, tt.dir)),
				wantKinds:       tt.kinds,
				redisScheme:     "redis",
				secretsExternal: true,
			}
			runChecks(t, r)
		})
	}
}
