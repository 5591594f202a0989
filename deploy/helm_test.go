package deploy

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"

	"github.com/bayeux-cluster/bayeux/pkg/cluster"
)

// The Helm chart deploy/helm/bayeux, rendered offline with the Helm SDK as
// `helm template bayeux deploy/helm/bayeux -f values.yaml` does (values
// checked against values.schema.json), then decoded and checked like the
// kustomize base.

const releaseName = "bayeux" // gives the kustomize base's object names

func chartDir(t *testing.T) string { return filepath.Join(root(t), "deploy", "helm", "bayeux") }

// renderChart renders the chart with vals over values.yaml. NOTES.txt is
// rendered too (a template error there fails an install) but not returned.
func renderChart(t *testing.T, vals map[string]any) ([]byte, error) {
	t.Helper()
	ch, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	opts := common.ReleaseOptions{Name: releaseName, Namespace: "bayeux", Revision: 1, IsInstall: true}
	rv, err := util.ToRenderValuesWithSchemaValidation(ch, vals, opts, common.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(files[name]) == "" {
			continue
		}
		b.WriteString("---\n# Source: " + name + "\n" + files[name] + "\n")
	}
	return []byte(b.String()), nil
}

// values parses a YAML values document.
func values(t *testing.T, doc string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("values %q: %v", doc, err)
	}
	return v
}

var (
	generatedSecrets = []string{"Secret/bayeux-gossip-key", "Secret/bayeux-cluster-tls"}
	nodeKinds        = []string{
		"ConfigMap/" + nodeName,
		"Deployment/" + nodeName,
		"Service/" + clientSvc,
		"Service/" + gossipSvc,
		"Service/" + apiSvc,
		"PodDisruptionBudget/" + nodeName,
		"HorizontalPodAutoscaler/" + nodeName,
		"NetworkPolicy/" + nodeName,
	}
	bundledRedisKinds = []string{"StatefulSet/" + redisName, "Service/" + redisName, "NetworkPolicy/" + redisName}
)

func kinds(groups ...[]string) []string { return slices.Concat(groups...) }

// helmCases are the value sets rendered: the defaults, each Redis mode, and
// everything optional switched on with the operator's own Secrets.
var helmCases = []struct {
	name   string
	values string
	want   render
}{
	{"defaults", ``, render{
		wantKinds: kinds(nodeKinds, bundledRedisKinds, generatedSecrets), redisScheme: "redis"}},
	{"redis sentinel", `
redis:
  mode: sentinel
  sentinel: {hosts: ["redis-sentinel-0.redis-sentinel:26379", "redis-sentinel-1.redis-sentinel:26379", "redis-sentinel-2.redis-sentinel:26379"], masterName: mymaster, db: 2}
`, render{wantKinds: kinds(nodeKinds, generatedSecrets), redisScheme: "redis+sentinel"}},
	{"redis sentinel tls", `
redis:
  mode: sentinel
  sentinel: {hosts: ["sentinel.example.com:26379"], masterName: bayeux, tls: true}
`, render{wantKinds: kinds(nodeKinds, generatedSecrets), redisScheme: "rediss+sentinel"}},
	{"redis cluster", `
redis:
  mode: cluster
  cluster: {nodes: ["redis-0.redis:6379", "redis-1.redis:6379", "redis-2.redis:6379"], partitions: 128}
`, render{wantKinds: kinds(nodeKinds, generatedSecrets), redisScheme: "redis+cluster"}},
	{"redis external", `
redis: {mode: external, external: {url: "rediss://redis.example.com:6380"}}
`, render{wantKinds: kinds(nodeKinds, generatedSecrets), redisScheme: "rediss"}},
	{"everything on, own secrets", `
redis:
  mode: sentinel
  urlSecret: {name: bayeux-redis-url, key: url}
tls: {enabled: true, existingSecret: bayeux-tls}
cluster:
  gossipKey: {existingSecret: my-gossip-key}
  tls: {existingSecret: my-cluster-tls, serverName: bayeux-node.cluster.local}
ingress: {enabled: true, host: bayeux.example.com, tlsSecretName: bayeux-example-tls}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
service: {type: LoadBalancer}
`, render{wantKinds: kinds(nodeKinds, []string{"Ingress/" + clientSvc, "ServiceMonitor/" + nodeName}),
		redisFromSecret: true, nodeTLS: true, secretsExternal: true}},
}

// TestHelm renders every case and runs the kustomize checks on it.
func TestHelm(t *testing.T) {
	for _, tc := range helmCases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := renderChart(t, values(t, tc.values))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			r := tc.want
			r.name = tc.name
			r.instanceLabel = true
			r.m = decodeManifests(t, out)
			runChecks(t, &r)
			if t.Failed() {
				t.Logf("rendered:\n%s", out)
			}
		})
	}
}

// TestHelmLint runs the checks of `helm lint --strict` on every case.
func TestHelmLint(t *testing.T) {
	for _, tc := range helmCases {
		t.Run(tc.name, func(t *testing.T) {
			l := lint.RunAll(chartDir(t), values(t, tc.values), "bayeux")
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
		})
	}
}

// TestHelmValuesRejected: values.schema.json turns typos and impossible
// settings into an error at install time, naming the key.
func TestHelmValuesRejected(t *testing.T) {
	for _, tt := range []struct {
		name, values, want string
	}{
		{"unknown top-level key", `replicas: 5`, "replicas"},
		{"misspelled nested key", `redis: {sentinel: {master: x}}`, "master"},
		{"unknown Redis mode", `redis: {mode: memory}`, "mode"},
		{"sentinel without hosts", `redis: {mode: sentinel, sentinel: {masterName: m}}`, "hosts"},
		{"sentinel without master name", `redis: {mode: sentinel, sentinel: {hosts: ["s:26379"]}}`, "masterName"},
		{"sentinel host without port", `redis: {mode: sentinel, sentinel: {hosts: ["s"], masterName: m}}`, "hosts"},
		{"cluster without nodes", `redis: {mode: cluster}`, "nodes"},
		{"external without URL", `redis: {mode: external}`, "url"},
		{"external URL of another scheme", `redis: {mode: external, external: {url: "http://r:6379"}}`, "url"},
		{"URL secret without key", `redis: {urlSecret: {name: s}}`, "key"},
		{"node TLS without its Secret", `tls: {enabled: true}`, "existingSecret"},
		{"extraEnv outside BAYEUX_*", `node: {extraEnv: {GOGC: "50"}}`, "GOGC"},
		{"per-address limit 0", `node: {maxSessionsPerIP: 0}`, "maxSessionsPerIP"},
		{"bad duration", `node: {timeout: 30}`, "timeout"},
		{"bad trusted proxy", `node: {trustedProxies: ["balancer.local"]}`, "trustedProxies"},
		{"resources without a memory limit", `resources: {limits: {memory: null}}`, "memory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderChart(t, values(t, tt.values))
			if err == nil {
				t.Fatalf("values %s rendered", tt.values)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
		})
	}
	t.Run("min above max replicas", func(t *testing.T) {
		_, err := renderChart(t, values(t, `autoscaling: {minReplicas: 5, maxReplicas: 3}`))
		if err == nil || !strings.Contains(err.Error(), "minReplicas") {
			t.Errorf("error %v, want one naming minReplicas", err)
		}
	})
}

// TestHelmImage: image.tag defaults to the chart's appVersion (never
// "latest"); a digest pins the image.
func TestHelmImage(t *testing.T) {
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, "deploy/helm/bayeux/Chart.yaml")), &chart); err != nil || chart.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion %q: %v", chart.AppVersion, err)
	}
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, tt := range []struct{ values, want string }{
		{``, "bayeux-node:" + chart.AppVersion},
		{`image: {repository: registry.example.com/bayeux/node, tag: v1.2.3}`, "registry.example.com/bayeux/node:v1.2.3"},
		{`image: {digest: "` + digest + `"}`, "bayeux-node@" + digest},
	} {
		out, err := renderChart(t, values(t, tt.values))
		if err != nil {
			t.Fatalf("values %q: %v", tt.values, err)
		}
		m := decodeManifests(t, out)
		if got := container(t, &m.deployment(t).Spec.Template, nodeCont).Image; got != tt.want {
			t.Errorf("values %q: image %q, want %q", tt.values, got, tt.want)
		}
	}
}

// TestHelmGeneratedSecrets: the gossip key and the cluster CA the chart
// draws are what the node accepts: the key parses as the node parses
// --gossip-key-file, and two nodes holding the certificate complete the
// mutual TLS handshake of the node-to-node gRPC, name check included.
func TestHelmGeneratedSecrets(t *testing.T) {
	out, err := renderChart(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeManifests(t, out)
	cm := m.configMaps[nodeName].Data

	gk := m.secrets["bayeux-gossip-key"]
	if gk == nil {
		t.Fatal("no gossip key Secret")
	}
	keys, err := cluster.ParseGossipKeys(string(gk.Data["gossip.key"]))
	if err != nil || len(keys) != 1 || len(keys[0]) != 32 {
		t.Fatalf("gossip key: %d keys, %v; want one 32-byte key", len(keys), err)
	}
	if gk.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("gossip key Secret not kept on uninstall/upgrade: a new key would split a rolling update")
	}

	ct := m.secrets["bayeux-cluster-tls"]
	if ct == nil {
		t.Fatal("no cluster TLS Secret")
	}
	dir := t.TempDir()
	files := cluster.TLSFiles{ServerName: cm["BAYEUX_CLUSTER_TLS_SERVER_NAME"]}
	for key, dst := range map[string]*string{"tls.crt": &files.Cert, "tls.key": &files.Key, "ca.crt": &files.CA} {
		*dst = filepath.Join(dir, key)
		if err := os.WriteFile(*dst, ct.Data[key], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if files.ServerName == "" {
		t.Error("BAYEUX_CLUSTER_TLS_SERVER_NAME not set for the generated certificate")
	}
	serverCfg, clientCfg, err := cluster.LoadTLS(files)
	if err != nil {
		t.Fatalf("the node would refuse the generated files: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srvErr := make(chan error, 1)
	go func() { srvErr <- tls.Server(a, serverCfg).HandshakeContext(ctx) }()
	cli := tls.Client(b, clientCfg)
	if err := cli.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-srvErr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if peers := cli.ConnectionState().PeerCertificates; len(peers) == 0 || !slices.Contains(peers[0].DNSNames, files.ServerName) {
		t.Errorf("server certificate names %v, want %s", peers, files.ServerName)
	}

	// Each render of a fresh install draws its own key.
	out2, err := renderChart(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(decodeManifests(t, out2).secrets["bayeux-gossip-key"].Data["gossip.key"]) == string(gk.Data["gossip.key"]) {
		t.Error("two renders drew the same gossip key")
	}
}
