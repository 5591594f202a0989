package deploy

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Names the manifests are expected to use.
const (
	nodeName    = "bayeux-node"   // Deployment, ConfigMap, PDB, HPA, NetworkPolicy
	clientSvc   = "bayeux"        // client Service
	gossipSvc   = "bayeux-gossip" // headless peer Service
	apiSvc      = "bayeux-api"    // server API Service (ClusterIP only)
	redisName   = "bayeux-redis"  // StatefulSet, Service, NetworkPolicy
	nodeImage   = "bayeux-node"   // placeholder image name, replaced with kustomize images:
	nodeCont    = "node"
	gossipPort  = 7946
	grpcPort    = 7947
	apiPort     = 8081
	httpPort    = 8080
	redisPort   = 6379
	readyPath   = "/readyz"
	healthzPath = "/healthz"
)

// manifests is the rendered kustomization, each object decoded into its
// Kubernetes type, by name.
type manifests struct {
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	netpols      map[string]*networkingv1.NetworkPolicy
	secrets      map[string]*corev1.Secret
	ingresses    map[string]*networkingv1.Ingress
	monitors     map[string]*monitoringv1.ServiceMonitor
	all          []metav1.Object
	kinds        []string // "Kind/name", in output order
}

// workload is a pod template with the name of what owns it.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var ws []workload
	for n, d := range m.deployments {
		ws = append(ws, workload{"Deployment", n, d.Spec.Selector, &d.Spec.Template})
	}
	for n, s := range m.statefulSets {
		ws = append(ws, workload{"StatefulSet", n, s.Spec.Selector, &s.Spec.Template})
	}
	slices.SortFunc(ws, func(a, b workload) int { return strings.Compare(a.kind+a.name, b.kind+b.name) })
	return ws
}

// renderKustomization builds dir like `kubectl kustomize dir`, offline.
func renderKustomization(t *testing.T, dir string) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatalf("kustomize output: %v", err)
	}
	return out
}

// splitDocs splits a multi-document YAML stream.
func splitDocs(stream []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(stream), -1) {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// decodeStrict decodes one document into a new object of the type its
// apiVersion and kind name, rejecting unknown fields.
func decodeStrict(doc []byte) (any, metav1.TypeMeta, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, tm, err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "apps/v1 StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		obj = &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1 NetworkPolicy":
		obj = &networkingv1.NetworkPolicy{}
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "networking.k8s.io/v1 Ingress":
		obj = &networkingv1.Ingress{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		obj = &monitoringv1.ServiceMonitor{}
	default:
		return nil, tm, fmt.Errorf("unexpected kind %q (apiVersion %q)", tm.Kind, tm.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, tm, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, tm, nil
}

func decodeManifests(t *testing.T, stream []byte) *manifests {
	t.Helper()
	m := &manifests{
		configMaps:   map[string]*corev1.ConfigMap{},
		services:     map[string]*corev1.Service{},
		deployments:  map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},
		hpas:         map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		netpols:      map[string]*networkingv1.NetworkPolicy{},
		secrets:      map[string]*corev1.Secret{},
		ingresses:    map[string]*networkingv1.Ingress{},
		monitors:     map[string]*monitoringv1.ServiceMonitor{},
	}
	for i, doc := range splitDocs(stream) {
		obj, tm, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		mo := obj.(metav1.Object)
		name := mo.GetName()
		key := tm.Kind + "/" + name
		if slices.Contains(m.kinds, key) {
			t.Fatalf("duplicate %s", key)
		}
		m.kinds = append(m.kinds, key)
		m.all = append(m.all, mo)
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			m.configMaps[name] = o
		case *corev1.Service:
			m.services[name] = o
		case *appsv1.Deployment:
			m.deployments[name] = o
		case *appsv1.StatefulSet:
			m.statefulSets[name] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs[name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas[name] = o
		case *networkingv1.NetworkPolicy:
			m.netpols[name] = o
		case *corev1.Secret:
			m.secrets[name] = o
		case *networkingv1.Ingress:
			m.ingresses[name] = o
		case *monitoringv1.ServiceMonitor:
			m.monitors[name] = o
		}
	}
	return m
}

// render is one rendering of the manifests (a kustomization, or the Helm
// chart with some values) and what the checks expect of it.
type render struct {
	name string
	m    *manifests
	// wantKinds lists every "Kind/name" the rendering must hold, no more.
	wantKinds []string
	// redisScheme is the scheme BAYEUX_REDIS must have ("redis" for the
	// bundled instance, whose Service it must name).
	redisScheme string
	// redisFromSecret: BAYEUX_REDIS comes from a Secret, not the ConfigMap.
	redisFromSecret bool
	// nodeTLS: the node serves HTTPS itself (probes use HTTPS).
	nodeTLS bool
	// secretsExternal: the Secrets the pods mount are created outside the
	// rendering (kustomize base); otherwise they must be in it.
	secretsExternal bool
	// instanceLabel: selectors carry app.kubernetes.io/instance (Helm).
	instanceLabel bool
}

// bundledRedis reports whether the rendering runs its own Redis.
func (r *render) bundledRedis() bool { return r.m.statefulSets[redisName] != nil }

func (m *manifests) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d := m.deployments[nodeName]
	if d == nil {
		t.Fatalf("no Deployment %s", nodeName)
	}
	return d
}

func (m *manifests) redis(t *testing.T) *appsv1.StatefulSet {
	t.Helper()
	s := m.statefulSets[redisName]
	if s == nil {
		t.Fatalf("no StatefulSet %s", redisName)
	}
	return s
}

func container(t *testing.T, pod *corev1.PodTemplateSpec, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// selects reports whether sel (a Service's map selector) selects pods with
// labels l. An empty selector selects nothing here: every Service must name
// its pods.
func selects(sel map[string]string, l map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(l))
}

func labelSelects(t *testing.T, sel *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(l))
}

// podPort finds the container port a Service or probe port refers to: by
// name, or by number (and protocol, if given).
func podPort(pod *corev1.PodTemplateSpec, p intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			cpProto := cp.Protocol
			if cpProto == "" {
				cpProto = corev1.ProtocolTCP
			}
			if cpProto != proto {
				continue
			}
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return cp, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

// nodeFlags lists the node's flags from cmd/node/config.go by type
// ("listen" -> "String").
func nodeFlags(t *testing.T) map[string]string {
	t.Helper()
	src := readFile(t, "cmd/node/config.go")
	re := regexp.MustCompile(`fs\.(String|Bool|Int|Int64|Float64|Duration)Var\(&c\.[\w.]+,\s*"([^"]+)"`)
	flags := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(src, -1) {
		flags[m[2]] = m[1]
	}
	if len(flags) < 10 || flags["listen"] == "" || flags["redis"] == "" || flags["join"] == "" {
		t.Fatalf("found only flags %v in cmd/node/config.go: has its style changed?", flags)
	}
	return flags
}

// envFlags maps BAYEUX_* names to flag types, as envName in cmd/node does.
func envFlags(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, typ := range nodeFlags(t) {
		out["BAYEUX_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = typ
	}
	return out
}

// checkFlagValue parses v the way the flag package would for typ.
func checkFlagValue(typ, v string) error {
	var err error
	switch typ {
	case "Bool":
		_, err = strconv.ParseBool(v)
	case "Int":
		_, err = strconv.ParseInt(v, 0, strconv.IntSize)
	case "Int64":
		_, err = strconv.ParseInt(v, 0, 64)
	case "Float64":
		_, err = strconv.ParseFloat(v, 64)
	case "Duration":
		_, err = time.ParseDuration(v)
	}
	return err
}

// portOf returns the port of a listen address like ":8080".
func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}
