package deploy

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
	redisName   = "bayeux-redis"  // StatefulSet, Service, NetworkPolicy
	nodeImage   = "bayeux-node"   // placeholder image name, replaced with kustomize images:
	nodeCont    = "node"
	gossipPort  = 7946
	grpcPort    = 7947
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
		}
	}
	return m
}

func k8sDir(t *testing.T) string { return filepath.Join(root(t), "deploy", "k8s") }

func loadK8s(t *testing.T) *manifests {
	t.Helper()
	return decodeManifests(t, renderKustomization(t, k8sDir(t)))
}

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
	re := regexp.MustCompile(`fs\.(String|Bool|Int|Int64|Duration)Var\(&c\.\w+,\s*"([^"]+)"`)
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

func TestK8sObjects(t *testing.T) {
	m := loadK8s(t)
	want := []string{
		"ConfigMap/" + nodeName,
		"Deployment/" + nodeName,
		"Service/" + clientSvc,
		"Service/" + gossipSvc,
		"PodDisruptionBudget/" + nodeName,
		"HorizontalPodAutoscaler/" + nodeName,
		"StatefulSet/" + redisName,
		"Service/" + redisName,
		"NetworkPolicy/" + nodeName,
		"NetworkPolicy/" + redisName,
	}
	got := slices.Sorted(slices.Values(m.kinds))
	if slices.Sort(want); !slices.Equal(got, want) {
		t.Errorf("objects %v, want %v", got, want)
	}
	for _, o := range m.all {
		if o.GetNamespace() != "" {
			t.Errorf("%s has namespace %q: the base must be namespace-agnostic", o.GetName(), o.GetNamespace())
		}
		if o.GetLabels()["app.kubernetes.io/name"] != "bayeux" {
			t.Errorf("%s labels %v: want app.kubernetes.io/name=bayeux", o.GetName(), o.GetLabels())
		}
	}
}

func TestK8sWorkloadSelectors(t *testing.T) {
	m := loadK8s(t)
	ws := m.workloads()
	if len(ws) != 2 {
		t.Fatalf("workloads %v, want the node Deployment and the Redis StatefulSet", ws)
	}
	for _, w := range ws {
		t.Run(w.kind+"/"+w.name, func(t *testing.T) {
			if !labelSelects(t, w.selector, w.pod.Labels) {
				t.Errorf("selector %v does not match pod template labels %v", w.selector, w.pod.Labels)
			}
			// The other workload's pods must not be selected too.
			for _, o := range ws {
				if o.name != w.name && labelSelects(t, w.selector, o.pod.Labels) {
					t.Errorf("selector %v also matches the pods of %s/%s", w.selector, o.kind, o.name)
				}
			}
		})
	}
	if ss := m.redis(t); ss.Spec.ServiceName != redisName || m.services[ss.Spec.ServiceName] == nil {
		t.Errorf("StatefulSet serviceName %q, want the existing Service %s", ss.Spec.ServiceName, redisName)
	}
}

func TestK8sServices(t *testing.T) {
	m := loadK8s(t)
	tests := []struct {
		service  string
		workload string // Kind/name of the pods it must select
		ports    []string
	}{
		// "port/protocol->container port number"
		{clientSvc, "Deployment/" + nodeName, []string{"80/TCP->8080"}},
		{gossipSvc, "Deployment/" + nodeName, []string{"7946/TCP->7946", "7946/UDP->7946", "7947/TCP->7947"}},
		{redisName, "StatefulSet/" + redisName, []string{"6379/TCP->6379"}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			svc := m.services[tt.service]
			if svc == nil {
				t.Fatalf("no Service %s", tt.service)
			}
			var matched []workload
			for _, w := range m.workloads() {
				if selects(svc.Spec.Selector, w.pod.Labels) {
					matched = append(matched, w)
				}
			}
			if len(matched) != 1 || matched[0].kind+"/"+matched[0].name != tt.workload {
				t.Fatalf("selector %v matches %v, want only the pods of %s", svc.Spec.Selector, matched, tt.workload)
			}
			pod := matched[0].pod
			var got []string
			for _, sp := range svc.Spec.Ports {
				if sp.TargetPort.Type != intstr.String {
					t.Errorf("port %d: targetPort %s, want a container port name", sp.Port, sp.TargetPort.String())
				}
				cp, ok := podPort(pod, sp.TargetPort, sp.Protocol)
				if !ok {
					t.Errorf("port %d/%s: targetPort %q is not a %s port of %s", sp.Port, sp.Protocol, sp.TargetPort.String(), sp.Protocol, tt.workload)
					continue
				}
				proto := sp.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				got = append(got, fmt.Sprintf("%d/%s->%d", sp.Port, proto, cp.ContainerPort))
			}
			if !slices.Equal(got, tt.ports) {
				t.Errorf("ports %v, want %v", got, tt.ports)
			}
		})
	}

	t.Run("client service has no affinity", func(t *testing.T) {
		s := m.services[clientSvc]
		if s.Spec.SessionAffinity != "" && s.Spec.SessionAffinity != corev1.ServiceAffinityNone {
			t.Errorf("sessionAffinity %q: any node serves any session, want None", s.Spec.SessionAffinity)
		}
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			t.Error("the client Service must not be headless")
		}
	})
	t.Run("gossip service is headless and publishes not-ready pods", func(t *testing.T) {
		s := m.services[gossipSvc]
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("clusterIP %q, want None (the name must resolve to every pod)", s.Spec.ClusterIP)
		}
		if !s.Spec.PublishNotReadyAddresses {
			t.Error("publishNotReadyAddresses false: starting nodes could not find each other")
		}
	})
}

func TestK8sProbes(t *testing.T) {
	m := loadK8s(t)
	d := m.deployment(t)
	c := container(t, &d.Spec.Template, nodeCont)
	tests := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", c.ReadinessProbe, readyPath},
		{"liveness", c.LivenessProbe, healthzPath},
	}
	for _, tt := range tests {
		t.Run("node "+tt.name, func(t *testing.T) {
			if tt.probe == nil || tt.probe.HTTPGet == nil {
				t.Fatalf("%s probe %+v, want httpGet", tt.name, tt.probe)
			}
			g := tt.probe.HTTPGet
			if g.Path != tt.path {
				t.Errorf("path %q, want %q", g.Path, tt.path)
			}
			cp, ok := podPort(&d.Spec.Template, g.Port, corev1.ProtocolTCP)
			if !ok {
				t.Fatalf("port %s is not a declared TCP port", g.Port.String())
			}
			if cp.ContainerPort != httpPort {
				t.Errorf("port %s is %d, want the HTTP port %d", g.Port.String(), cp.ContainerPort, httpPort)
			}
			if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
				t.Errorf("scheme %q, want HTTP", g.Scheme)
			}
		})
	}

	r := container(t, &m.redis(t).Spec.Template, "redis")
	for name, p := range map[string]*corev1.Probe{"readiness": r.ReadinessProbe, "liveness": r.LivenessProbe} {
		t.Run("redis "+name, func(t *testing.T) {
			if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"redis-cli", "ping"}) {
				t.Errorf("%s probe %+v, want exec redis-cli ping", name, p)
			}
		})
	}
}

func TestK8sNodeDeployment(t *testing.T) {
	m := loadK8s(t)
	d := m.deployment(t)
	pod := &d.Spec.Template
	c := container(t, pod, nodeCont)

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	if ref, _, _ := strings.Cut(c.Image, ":"); ref != nodeImage {
		t.Errorf("image %q, want the placeholder %s:<tag> (set with kustomize images:)", c.Image, nodeImage)
	}
	t.Run("ports match the Dockerfile", func(t *testing.T) {
		var exposed, declared []string
		stages := dockerStages(t)
		for _, ins := range stages[len(stages)-1].instr {
			if e, ok := strings.CutPrefix(ins, "EXPOSE "); ok {
				for _, p := range strings.Fields(e) {
					if !strings.Contains(p, "/") {
						p += "/tcp"
					}
					exposed = append(exposed, strings.ToLower(p))
				}
			}
		}
		for _, cp := range c.Ports {
			proto := cp.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			declared = append(declared, strings.ToLower(fmt.Sprintf("%d/%s", cp.ContainerPort, proto)))
		}
		slices.Sort(exposed)
		slices.Sort(declared)
		if !slices.Equal(exposed, declared) {
			t.Errorf("container ports %v, Dockerfile EXPOSE %v", declared, exposed)
		}
	})
	t.Run("graceful shutdown", func(t *testing.T) {
		tg := pod.Spec.TerminationGracePeriodSeconds
		if tg == nil || *tg != 30 {
			t.Fatalf("terminationGracePeriodSeconds %v, want 30", tg)
		}
		// preStop runs the node binary itself (distroless: no shell, no
		// sleep): "/bayeux-node sleep <d>", the ENTRYPOINT path of the Dockerfile.
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
			t.Fatalf("no preStop exec hook: %+v", c.Lifecycle)
		}
		cmd := c.Lifecycle.PreStop.Exec.Command
		if len(cmd) != 3 || cmd[0] != "/bayeux-node" || cmd[1] != "sleep" {
			t.Fatalf("preStop %v, want [/bayeux-node sleep <duration>]", cmd)
		}
		sleep, err := time.ParseDuration(cmd[2])
		if err != nil || sleep <= 0 {
			t.Fatalf("preStop sleep %q: %v", cmd[2], err)
		}
		if !strings.Contains(readFile(t, "Dockerfile"), `ENTRYPOINT ["/bayeux-node"]`) {
			t.Errorf("the Dockerfile's ENTRYPOINT is not /bayeux-node, which preStop runs")
		}
		grace := m.configMaps[nodeName].Data["BAYEUX_SHUTDOWN_GRACE"]
		g, err := time.ParseDuration(grace)
		if err != nil {
			t.Fatalf("BAYEUX_SHUTDOWN_GRACE %q: %v", grace, err)
		}
		if g <= 0 || sleep+g >= time.Duration(*tg)*time.Second {
			t.Errorf("preStop %v + BAYEUX_SHUTDOWN_GRACE %v, want below terminationGracePeriodSeconds (%ds)", sleep, g, *tg)
		}
	})
	t.Run("anti-affinity by host", func(t *testing.T) {
		a := pod.Spec.Affinity
		if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
			t.Fatal("no preferred podAntiAffinity")
		}
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if w.PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" || !labelSelects(t, w.PodAffinityTerm.LabelSelector, pod.Labels) {
				t.Errorf("term %+v: want topologyKey kubernetes.io/hostname selecting the node pods", w.PodAffinityTerm)
			}
		}
		if len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
			t.Error("required anti-affinity would leave replicas beyond the host count unschedulable")
		}
	})
	t.Run("no service links", func(t *testing.T) {
		// Service links inject <SERVICE>_PORT... variables; for Services
		// named bayeux* they land in the BAYEUX_* flag namespace.
		if e := pod.Spec.EnableServiceLinks; e == nil || *e {
			t.Error("enableServiceLinks not false")
		}
	})
}

func TestK8sNodeEnv(t *testing.T) {
	m := loadK8s(t)
	d := m.deployment(t)
	c := container(t, &d.Spec.Template, nodeCont)
	flags := envFlags(t)
	cm := m.configMaps[nodeName]
	if cm == nil {
		t.Fatalf("no ConfigMap %s", nodeName)
	}

	t.Run("envFrom", func(t *testing.T) {
		var refs []string
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				refs = append(refs, ef.ConfigMapRef.Name)
				if ef.Prefix != "" {
					t.Errorf("envFrom prefix %q would rename the BAYEUX_* keys", ef.Prefix)
				}
				if m.configMaps[ef.ConfigMapRef.Name] == nil {
					t.Errorf("envFrom names ConfigMap %q, which does not exist", ef.ConfigMapRef.Name)
				}
			}
		}
		if !slices.Contains(refs, nodeName) {
			t.Errorf("envFrom ConfigMaps %v, want %s", refs, nodeName)
		}
	})

	// Every name must be a node flag's env fallback: a typo is ignored by
	// the node, silently.
	type setting struct{ source, name, value string }
	var all []setting
	for k, v := range cm.Data {
		all = append(all, setting{"ConfigMap " + nodeName, k, v})
	}
	for _, e := range c.Env {
		all = append(all, setting{"env", e.Name, e.Value})
	}
	slices.SortFunc(all, func(a, b setting) int { return strings.Compare(a.name, b.name) })
	for _, s := range all {
		t.Run(s.name, func(t *testing.T) {
			typ, ok := flags[s.name]
			if !ok {
				t.Fatalf("%s: %s is not the BAYEUX_* name of any flag in cmd/node/config.go", s.source, s.name)
			}
			if s.value != "" {
				if err := checkFlagValue(typ, s.value); err != nil {
					t.Errorf("%s=%q: not a valid %s: %v", s.name, s.value, typ, err)
				}
			}
		})
	}

	t.Run("BAYEUX_ADVERTISE is the pod IP", func(t *testing.T) {
		for _, e := range c.Env {
			if e.Name == "BAYEUX_ADVERTISE" {
				if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
					t.Errorf("BAYEUX_ADVERTISE %+v, want fieldRef status.podIP", e)
				}
				return
			}
		}
		t.Error("BAYEUX_ADVERTISE not set: peers would get whatever interface address the node picks")
	})
	t.Run("BAYEUX_NODE_ID is unique per process", func(t *testing.T) {
		// Its default (host name = pod name, plus a random suffix) is unique
		// per process; a fixed value such as metadata.name would survive a
		// container restart, and a restarted node must get a new tag.
		for _, e := range c.Env {
			if e.Name == "BAYEUX_NODE_ID" {
				t.Errorf("BAYEUX_NODE_ID set (%+v): a restarted container would reuse its node tag", e)
			}
		}
		if _, ok := cm.Data["BAYEUX_NODE_ID"]; ok {
			t.Error("BAYEUX_NODE_ID in the ConfigMap: every node would share one id")
		}
	})
	t.Run("BAYEUX_JOIN names the gossip Service", func(t *testing.T) {
		join := cm.Data["BAYEUX_JOIN"]
		if strings.TrimSpace(join) == "" {
			t.Fatal("BAYEUX_JOIN empty: the nodes would not find each other")
		}
		for _, seed := range strings.Split(join, ",") {
			seed = strings.TrimSpace(seed)
			host := seed
			if h, p, err := net.SplitHostPort(seed); err == nil {
				host = h
				if p != strconv.Itoa(gossipPort) {
					t.Errorf("seed %q: port %s, want the gossip port %d", seed, p, gossipPort)
				}
			}
			// The bare name resolves in the pods' own namespace.
			if host != gossipSvc {
				t.Errorf("seed %q, want the headless Service %s", seed, gossipSvc)
			}
		}
	})
	t.Run("BAYEUX_REDIS names the Redis Service", func(t *testing.T) {
		raw := cm.Data["BAYEUX_REDIS"]
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			t.Fatalf("BAYEUX_REDIS %q, want a redis:// URL", raw)
		}
		svc := m.services[u.Hostname()]
		if svc == nil || u.Hostname() != redisName {
			t.Fatalf("BAYEUX_REDIS host %q, want the Service %s", u.Hostname(), redisName)
		}
		port := u.Port()
		if port == "" {
			port = "6379"
		}
		found := false
		for _, sp := range svc.Spec.Ports {
			found = found || strconv.Itoa(int(sp.Port)) == port
		}
		if !found {
			t.Errorf("BAYEUX_REDIS port %s is not a port of Service %s", port, redisName)
		}
	})
	t.Run("listen addresses match the container ports", func(t *testing.T) {
		for _, tt := range []struct {
			key  string
			def  string
			port int32
		}{
			{"BAYEUX_LISTEN", ":8080", httpPort},
			{"BAYEUX_GOSSIP_LISTEN", ":7946", gossipPort},
			{"BAYEUX_GRPC_LISTEN", ":7947", grpcPort},
		} {
			addr := cm.Data[tt.key]
			if addr == "" {
				addr = tt.def
			}
			if p := portOf(t, addr); p != tt.port {
				t.Errorf("%s %q: port %d, want %d (the declared container port)", tt.key, addr, p, tt.port)
			}
		}
	})
	t.Run("no debug endpoints", func(t *testing.T) {
		for _, k := range []string{"BAYEUX_DEBUG_API", "BAYEUX_PPROF", "BAYEUX_GOSSIP_FAST"} {
			if v := cm.Data[k]; v != "" && v != "false" {
				t.Errorf("%s=%q: not for production", k, v)
			}
		}
	})
}

func TestK8sSecurity(t *testing.T) {
	m := loadK8s(t)
	for _, w := range m.workloads() {
		t.Run(w.kind+"/"+w.name, func(t *testing.T) {
			ps := w.pod.Spec.SecurityContext
			if a := w.pod.Spec.AutomountServiceAccountToken; a == nil || *a {
				t.Error("automountServiceAccountToken not false (no API access is needed)")
			}
			for _, c := range w.pod.Spec.Containers {
				sc := c.SecurityContext
				if sc == nil {
					t.Fatalf("container %s: no securityContext", c.Name)
				}
				nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (ps != nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot)
				if !nonRoot {
					t.Errorf("container %s: runAsNonRoot not set", c.Name)
				}
				// A numeric user, or the kubelet cannot verify runAsNonRoot for
				// an image whose USER is a name (distroless "nonroot").
				uid := sc.RunAsUser
				if uid == nil && ps != nil {
					uid = ps.RunAsUser
				}
				if uid == nil || *uid == 0 {
					t.Errorf("container %s: runAsUser %v, want a non-zero uid", c.Name, uid)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("container %s: readOnlyRootFilesystem not true", c.Name)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("container %s: allowPrivilegeEscalation not false", c.Name)
				}
				if sc.Privileged != nil && *sc.Privileged {
					t.Errorf("container %s: privileged", c.Name)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
					t.Errorf("container %s: capabilities %+v, want drop ALL, add none", c.Name, sc.Capabilities)
				}
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if _, ok := c.Resources.Requests[r]; !ok {
						t.Errorf("container %s: no %s request", c.Name, r)
					}
					if _, ok := c.Resources.Limits[r]; !ok {
						t.Errorf("container %s: no %s limit", c.Name, r)
					}
				}
			}
		})
	}
	t.Run("node runs as distroless nonroot", func(t *testing.T) {
		ps := m.deployment(t).Spec.Template.Spec.SecurityContext
		if ps == nil || ps.RunAsUser == nil || *ps.RunAsUser != 65532 {
			t.Errorf("pod securityContext %+v, want runAsUser 65532 (distroless nonroot)", ps)
		}
	})
}

func TestK8sRedis(t *testing.T) {
	m := loadK8s(t)
	ss := m.redis(t)
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", ss.Spec.Replicas)
	}
	c := container(t, &ss.Spec.Template, "redis")
	if c.Image != "redis:7.2-alpine" {
		t.Errorf("image %q, want redis:7.2-alpine (as docker-compose.yml)", c.Image)
	}
	args := append(slices.Clone(c.Command), c.Args...)
	for _, want := range [][2]string{{"--save", ""}, {"--appendonly", "no"}} {
		i := slices.Index(args, want[0])
		if i < 0 || i+1 >= len(args) || args[i+1] != want[1] {
			t.Errorf("command %q: want %s %q (no persistence)", args, want[0], want[1])
		}
	}
	// A read-only root file system needs a writable working directory.
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || vm.MountPath == "/data"
	}
	if !mounted {
		t.Error("no volume at /data (the image's working directory)")
	}
}

func TestK8sPDBAndHPA(t *testing.T) {
	m := loadK8s(t)
	d := m.deployment(t)
	t.Run("PodDisruptionBudget", func(t *testing.T) {
		p := m.pdbs[nodeName]
		if p == nil {
			t.Fatalf("no PodDisruptionBudget %s", nodeName)
		}
		if !labelSelects(t, p.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("selector %v does not match the node pods %v", p.Spec.Selector, d.Spec.Template.Labels)
		}
		if labelSelects(t, p.Spec.Selector, m.redis(t).Spec.Template.Labels) {
			t.Error("selector also matches the Redis pods")
		}
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() != "1" || p.Spec.MinAvailable != nil {
			t.Errorf("maxUnavailable %v minAvailable %v, want maxUnavailable 1 only", p.Spec.MaxUnavailable, p.Spec.MinAvailable)
		}
	})
	t.Run("HorizontalPodAutoscaler", func(t *testing.T) {
		h := m.hpas[nodeName]
		if h == nil {
			t.Fatalf("no HorizontalPodAutoscaler %s", nodeName)
		}
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
			t.Errorf("scaleTargetRef %+v, want apps/v1 Deployment %s", ref, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 10 {
			t.Errorf("replicas %v..%d, want 3..10", h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		cpu := false
		for _, mt := range h.Spec.Metrics {
			cpu = cpu || (mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU &&
				mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType && mt.Resource.Target.AverageUtilization != nil)
		}
		if !cpu {
			t.Errorf("metrics %+v, want CPU utilization", h.Spec.Metrics)
		}
		// Utilization is relative to the request.
		if _, ok := container(t, &d.Spec.Template, nodeCont).Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Error("node container has no CPU request: CPU utilization is undefined")
		}
	})
}

func TestK8sNetworkPolicies(t *testing.T) {
	m := loadK8s(t)
	nodePod := &m.deployment(t).Spec.Template
	redisPod := &m.redis(t).Spec.Template

	// allowed lists, for each "port/protocol" (container port numbers), the
	// peers a policy admits: "*" for anyone, else "node" / "redis" / "other".
	allowed := func(t *testing.T, np *networkingv1.NetworkPolicy, pod *corev1.PodTemplateSpec) map[string][]string {
		t.Helper()
		if !labelSelects(t, &np.Spec.PodSelector, pod.Labels) {
			t.Fatalf("podSelector %v does not select pods %v", np.Spec.PodSelector, pod.Labels)
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("policyTypes %v, want Ingress", np.Spec.PolicyTypes)
		}
		out := map[string][]string{}
		for _, rule := range np.Spec.Ingress {
			var peers []string
			if len(rule.From) == 0 {
				peers = []string{"*"}
			}
			for _, f := range rule.From {
				switch {
				case f.IPBlock != nil || f.NamespaceSelector != nil || f.PodSelector == nil:
					peers = append(peers, "other")
				case labelSelects(t, f.PodSelector, nodePod.Labels) && !labelSelects(t, f.PodSelector, redisPod.Labels):
					peers = append(peers, "node")
				default:
					peers = append(peers, "other")
				}
			}
			if len(rule.Ports) == 0 {
				t.Errorf("rule %+v opens every port", rule)
			}
			for _, p := range rule.Ports {
				proto := corev1.ProtocolTCP
				if p.Protocol != nil {
					proto = *p.Protocol
				}
				if p.Port == nil || p.EndPort != nil {
					t.Errorf("rule port %+v: want one port", p)
					continue
				}
				cp, ok := podPort(pod, *p.Port, proto)
				if !ok {
					t.Errorf("port %s/%s is not declared by the selected pods", p.Port.String(), proto)
					continue
				}
				k := fmt.Sprintf("%d/%s", cp.ContainerPort, proto)
				out[k] = append(out[k], peers...)
			}
		}
		return out
	}

	t.Run(nodeName, func(t *testing.T) {
		np := m.netpols[nodeName]
		if np == nil {
			t.Fatalf("no NetworkPolicy %s", nodeName)
		}
		got := allowed(t, np, nodePod)
		want := map[string][]string{
			"8080/TCP": {"*"},
			"7946/TCP": {"node"},
			"7946/UDP": {"node"},
			"7947/TCP": {"node"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ingress %v, want %v", got, want)
		}
	})
	t.Run(redisName, func(t *testing.T) {
		np := m.netpols[redisName]
		if np == nil {
			t.Fatalf("no NetworkPolicy %s", redisName)
		}
		got := allowed(t, np, redisPod)
		if want := map[string][]string{"6379/TCP": {"node"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("ingress %v, want %v", got, want)
		}
	})
}
