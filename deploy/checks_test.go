package deploy

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The semantic checks of a rendering (k8s_test.go, helm_test.go).

func checkObjects(t *testing.T, r *render) {
	m := r.m
	want := slices.Clone(r.wantKinds)
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

func checkWorkloadSelectors(t *testing.T, r *render) {
	m := r.m
	ws := m.workloads()
	want := 1
	if r.bundledRedis() {
		want = 2 // and the Redis StatefulSet
	}
	if len(ws) != want || m.deployments[nodeName] == nil {
		t.Fatalf("workloads %v, want the node Deployment (and the bundled Redis StatefulSet, if any)", ws)
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
	if !r.bundledRedis() {
		return
	}
	if ss := m.redis(t); ss.Spec.ServiceName != redisName || m.services[ss.Spec.ServiceName] == nil {
		t.Errorf("StatefulSet serviceName %q, want the existing Service %s", ss.Spec.ServiceName, redisName)
	}
}

func checkServices(t *testing.T, r *render) {
	m := r.m
	tests := []struct {
		service  string
		workload string // Kind/name of the pods it must select
		ports    []string
	}{
		// "port/protocol->container port number"
		{clientSvc, "Deployment/" + nodeName, []string{"80/TCP->8080"}},
		{gossipSvc, "Deployment/" + nodeName, []string{"7946/TCP->7946", "7946/UDP->7946", "7947/TCP->7947"}},
		// The server API: inside the cluster only.
		{apiSvc, "Deployment/" + nodeName, []string{"8081/TCP->8081"}},
	}
	if r.bundledRedis() {
		tests = append(tests, struct {
			service  string
			workload string
			ports    []string
		}{redisName, "StatefulSet/" + redisName, []string{"6379/TCP->6379"}})
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
		// A LoadBalancer or NodePort that SNATs would hide the client
		// addresses the per-address limits need.
		if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP && s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("type %s with externalTrafficPolicy %q, want Local", s.Spec.Type, s.Spec.ExternalTrafficPolicy)
		}
	})
	t.Run("API service is inside the cluster only", func(t *testing.T) {
		s := m.services[apiSvc]
		if s.Spec.Type != "" && s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("type %s, want ClusterIP", s.Spec.Type)
		}
		for _, o := range m.services {
			if o.Name == apiSvc {
				continue
			}
			for _, sp := range o.Spec.Ports {
				if sp.TargetPort.String() == "api" || sp.TargetPort.IntValue() == apiPort {
					t.Errorf("Service %s also exposes the API port", o.Name)
				}
			}
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

func checkProbes(t *testing.T, r *render) {
	m := r.m
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
			want := corev1.URISchemeHTTP
			if r.nodeTLS {
				want = corev1.URISchemeHTTPS
			}
			if g.Scheme != want && (g.Scheme != "" || want != corev1.URISchemeHTTP) {
				t.Errorf("scheme %q, want %s", g.Scheme, want)
			}
		})
	}

	if !r.bundledRedis() {
		return
	}
	rc := container(t, &m.redis(t).Spec.Template, "redis")
	for name, p := range map[string]*corev1.Probe{"readiness": rc.ReadinessProbe, "liveness": rc.LivenessProbe} {
		t.Run("redis "+name, func(t *testing.T) {
			if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"redis-cli", "ping"}) {
				t.Errorf("%s probe %+v, want exec redis-cli ping", name, p)
			}
		})
	}
}

func checkNodeDeployment(t *testing.T, r *render) {
	m := r.m
	d := m.deployment(t)
	pod := &d.Spec.Template
	c := container(t, pod, nodeCont)

	// With an autoscaler the replica count may be left to it.
	if d.Spec.Replicas == nil && m.hpas[nodeName] == nil || d.Spec.Replicas != nil && *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3 (or unset under the HorizontalPodAutoscaler)", d.Spec.Replicas)
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
		// The API port (--api-listen) may not be EXPOSEd yet.
		if !slices.Contains(exposed, "8081/tcp") {
			exposed = append(exposed, "8081/tcp")
		}
		slices.Sort(exposed)
		slices.Sort(declared)
		if !slices.Equal(exposed, declared) {
			t.Errorf("container ports %v, Dockerfile EXPOSE %v (and the API port 8081)", declared, exposed)
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
	t.Run("spread over zones and hosts", func(t *testing.T) {
		keys := map[string]bool{}
		for _, c := range pod.Spec.TopologySpreadConstraints {
			if !labelSelects(t, c.LabelSelector, pod.Labels) {
				t.Errorf("constraint %s: selector %v does not select the node pods", c.TopologyKey, c.LabelSelector)
			}
			if c.MaxSkew < 1 {
				t.Errorf("constraint %s: maxSkew %d", c.TopologyKey, c.MaxSkew)
			}
			keys[c.TopologyKey] = true
		}
		for _, k := range []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"} {
			if !keys[k] {
				t.Errorf("no topologySpreadConstraint on %s", k)
			}
		}
	})
	t.Run("memory limit with headroom", func(t *testing.T) {
		req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
		// request = limit: the scheduler reserves what the pod may use, and
		// the memory HPA target is a share of what the pod can really hold.
		if req.Cmp(*lim) != 0 {
			t.Errorf("memory request %s, limit %s: want them equal", req, lim)
		}
		// docs/capacity.md plans 40k connections in 1Gi; 512Mi was its
		// edge of OOM at the old per-connection figure.
		if lim.Value() < 1<<30 {
			t.Errorf("memory limit %s, want at least 1Gi (docs/capacity.md)", lim)
		}
		for _, e := range c.Env {
			if e.Name != "GOMEMLIMIT" {
				continue
			}
			q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
			if err != nil || q.Value() <= 0 || q.Cmp(*lim) >= 0 {
				t.Errorf("GOMEMLIMIT %q, want below the memory limit %s", e.Value, lim)
			}
			return
		}
		t.Error("GOMEMLIMIT not set: the Go GC does not know the container's limit")
	})
	t.Run("no service links", func(t *testing.T) {
		// Service links inject <SERVICE>_PORT... variables; for Services
		// named bayeux* they land in the BAYEUX_* flag namespace.
		if e := pod.Spec.EnableServiceLinks; e == nil || *e {
			t.Error("enableServiceLinks not false")
		}
	})
}

func checkNodeEnv(t *testing.T, r *render) {
	m := r.m
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
		if e.Name == "GOMEMLIMIT" { // the Go runtime's, checked with the memory limit
			continue
		}
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
	t.Run("BAYEUX_REDIS", func(t *testing.T) {
		raw, fromSecret := cm.Data["BAYEUX_REDIS"], false
		for _, e := range c.Env {
			if e.Name == "BAYEUX_REDIS" {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" {
					t.Fatalf("env BAYEUX_REDIS %+v, want a secretKeyRef (a URL with a password stays out of the ConfigMap)", e)
				}
				fromSecret = true
			}
		}
		if fromSecret != r.redisFromSecret || (fromSecret && raw != "") {
			t.Fatalf("BAYEUX_REDIS from a Secret %v (ConfigMap value %q), want %v", fromSecret, raw, r.redisFromSecret)
		}
		if fromSecret {
			return
		}
		checkRedisURL(t, r, raw)
	})
	t.Run("demo off", func(t *testing.T) {
		if v := cm.Data["BAYEUX_DEMO"]; v != "false" {
			t.Errorf("BAYEUX_DEMO %q, want false (the demo publishes node stats every second and serves a chat)", v)
		}
	})
	t.Run("trusted proxies", func(t *testing.T) {
		// Clients arrive through the Ingress controller: without trusting
		// its addresses every client would count against one address's
		// --max-sessions-per-ip and --max-held-per-ip.
		raw := cm.Data["BAYEUX_TRUSTED_PROXIES"]
		var n int
		for _, p := range strings.Split(raw, ",") {
			if _, err := netip.ParsePrefix(strings.TrimSpace(p)); err != nil {
				t.Errorf("BAYEUX_TRUSTED_PROXIES %q: %v", raw, err)
			}
			n++
		}
		if raw == "" || n == 0 {
			t.Error("BAYEUX_TRUSTED_PROXIES not set")
		}
	})
	t.Run("gossip key and cluster mTLS files are mounted Secrets", func(t *testing.T) {
		for _, k := range []string{"BAYEUX_GOSSIP_KEY_FILE", "BAYEUX_CLUSTER_TLS_CERT", "BAYEUX_CLUSTER_TLS_KEY", "BAYEUX_CLUSTER_TLS_CA"} {
			path := cm.Data[k]
			if path == "" {
				t.Errorf("%s not set: node-to-node traffic would be in clear", k)
				continue
			}
			secret, key := mountedSecret(t, &d.Spec.Template, c, path)
			if secret == "" {
				t.Errorf("%s=%s is not in a mounted Secret volume", k, path)
				continue
			}
			if r.secretsExternal {
				continue
			}
			sec := m.secrets[secret]
			if sec == nil {
				t.Errorf("%s: Secret %s is not in the rendering", k, secret)
			} else if _, ok := sec.Data[key]; !ok {
				t.Errorf("%s: Secret %s has no key %q", k, secret, key)
			}
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
			// Its default per the server API's contract; not set, so that
			// the manifests also run a node that predates the flag.
			{"BAYEUX_API_LISTEN", ":8081", apiPort},
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

func checkSecurity(t *testing.T, r *render) {
	m := r.m
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

func checkRedis(t *testing.T, r *render) {
	m := r.m
	if !r.bundledRedis() {
		if m.services[redisName] != nil {
			t.Errorf("Service %s without the bundled Redis", redisName)
		}
		return
	}
	ss := m.redis(t)
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", ss.Spec.Replicas)
	}
	c := container(t, &ss.Spec.Template, "redis")
	if c.Image != "redis:7.2-alpine" {
		t.Errorf("image %q, want redis:7.2-alpine (as docker-compose.yml)", c.Image)
	}
	// Persistence, as the README advises: an append-only file...
	args := append(slices.Clone(c.Command), c.Args...)
	for _, want := range [][2]string{{"--appendonly", "yes"}, {"--appendfsync", "everysec"}, {"--maxmemory-policy", "noeviction"}} {
		i := slices.Index(args, want[0])
		if i < 0 || i+1 >= len(args) || args[i+1] != want[1] {
			t.Errorf("command %q: want %s %q", args, want[0], want[1])
		}
	}
	// ... in /data, on a PersistentVolumeClaim of the StatefulSet.
	var vol string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == "/data" {
			vol = vm.Name
		}
	}
	if vol == "" {
		t.Fatal("no volume at /data (the image's working directory)")
	}
	var claim *corev1.PersistentVolumeClaim
	for i := range ss.Spec.VolumeClaimTemplates {
		if ss.Spec.VolumeClaimTemplates[i].Name == vol {
			claim = &ss.Spec.VolumeClaimTemplates[i]
		}
	}
	if claim == nil {
		t.Fatalf("volume %q at /data is not a volumeClaimTemplate: the append-only file would not outlive the pod", vol)
	}
	if q, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.IsZero() {
		t.Errorf("claim %s: no storage request", vol)
	}
	for _, v := range ss.Spec.Template.Spec.Volumes {
		if v.Name == vol {
			t.Errorf("pod volume %q shadows the claim", vol)
		}
	}
	// Redis's own limit below the container's: writes fail visibly
	// instead of Redis being OOM-killed.
	if i := slices.Index(args, "--maxmemory"); i < 0 || i+1 >= len(args) {
		t.Error("no --maxmemory")
	} else if mm, err := resource.ParseQuantity(strings.TrimSuffix(strings.ToUpper(args[i+1]), "B")); err != nil || mm.Cmp(*c.Resources.Limits.Memory()) >= 0 {
		t.Errorf("--maxmemory %s, want below the memory limit %s", args[i+1], c.Resources.Limits.Memory())
	}
}

func checkPDBAndHPA(t *testing.T, r *render) {
	m := r.m
	d := m.deployment(t)
	t.Run("PodDisruptionBudget", func(t *testing.T) {
		p := m.pdbs[nodeName]
		if p == nil {
			t.Fatalf("no PodDisruptionBudget %s", nodeName)
		}
		if !labelSelects(t, p.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("selector %v does not match the node pods %v", p.Spec.Selector, d.Spec.Template.Labels)
		}
		if r.bundledRedis() && labelSelects(t, p.Spec.Selector, m.redis(t).Spec.Template.Labels) {
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
		// Connections cost memory more than CPU: an HPA on CPU alone never
		// sees the memory limit coming (docs/capacity.md).
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			found := false
			for _, mt := range h.Spec.Metrics {
				found = found || (mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == res &&
					mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType && mt.Resource.Target.AverageUtilization != nil &&
					*mt.Resource.Target.AverageUtilization > 0 && *mt.Resource.Target.AverageUtilization <= 90)
			}
			if !found {
				t.Errorf("metrics %+v, want %s utilization (at most 90%%)", h.Spec.Metrics, res)
			}
			// Utilization is relative to the request.
			if _, ok := container(t, &d.Spec.Template, nodeCont).Resources.Requests[res]; !ok {
				t.Errorf("node container has no %s request: its utilization is undefined", res)
			}
		}
	})
}

func checkNetworkPolicies(t *testing.T, r *render) {
	m := r.m
	nodePod := &m.deployment(t).Spec.Template
	redisPod := &corev1.PodTemplateSpec{}
	if r.bundledRedis() {
		redisPod = &m.redis(t).Spec.Template
	}

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
				case f.IPBlock == nil && f.PodSelector == nil && f.NamespaceSelector != nil &&
					len(f.NamespaceSelector.MatchLabels) == 0 && len(f.NamespaceSelector.MatchExpressions) == 0:
					peers = append(peers, "cluster") // any pod, not outside addresses
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
			"8081/TCP": {"cluster"},
			"7946/TCP": {"node"},
			"7946/UDP": {"node"},
			"7947/TCP": {"node"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ingress %v, want %v", got, want)
		}
	})
	t.Run(redisName, func(t *testing.T) {
		if !r.bundledRedis() {
			if m.netpols[redisName] != nil {
				t.Errorf("NetworkPolicy %s without the bundled Redis", redisName)
			}
			return
		}
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
