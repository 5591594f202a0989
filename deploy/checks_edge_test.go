package deploy

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Checks of what sits at the edges of the node Deployment: the Redis URL,
// mounted Secrets, the Ingress and the ServiceMonitor.

// checkRedisURL checks BAYEUX_REDIS against the rendering's Redis mode.
func checkRedisURL(t *testing.T, r *render, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("BAYEUX_REDIS %q: %v", raw, err)
	}
	if u.Scheme != r.redisScheme {
		t.Fatalf("BAYEUX_REDIS %q: scheme %q, want %q", raw, u.Scheme, r.redisScheme)
	}
	// Every listed host is host:port.
	for _, h := range strings.Split(u.Host, ",") {
		if _, p, err := net.SplitHostPort(h); err != nil || p == "" {
			t.Errorf("BAYEUX_REDIS %q: host %q, want host:port", raw, h)
		}
	}
	switch r.redisScheme {
	case "redis+sentinel", "rediss+sentinel":
		// redis+sentinel://host:26379[,host...]/MASTER_NAME[?db=N]
		if name := strings.Trim(u.Path, "/"); name == "" || strings.Contains(name, "/") {
			t.Errorf("BAYEUX_REDIS %q: want the master name as the path", raw)
		}
		if db := u.Query().Get("db"); db != "" {
			if _, err := strconv.Atoi(db); err != nil {
				t.Errorf("BAYEUX_REDIS %q: db %q", raw, db)
			}
		}
	case "redis+cluster", "rediss+cluster":
		if u.Path != "" {
			t.Errorf("BAYEUX_REDIS %q: no path expected", raw)
		}
	}
	if !r.bundledRedis() {
		if u.Hostname() == redisName {
			t.Errorf("BAYEUX_REDIS %q names the bundled Redis, which is not rendered", raw)
		}
		return
	}
	svc := r.m.services[u.Hostname()]
	if svc == nil || u.Hostname() != redisName {
		t.Fatalf("BAYEUX_REDIS host %q, want the Service %s", u.Hostname(), redisName)
	}
	port := u.Port()
	found := false
	for _, sp := range svc.Spec.Ports {
		found = found || strconv.Itoa(int(sp.Port)) == port
	}
	if !found {
		t.Errorf("BAYEUX_REDIS port %s is not a port of Service %s", port, redisName)
	}
}

// mountedSecret returns the Secret and key a file path of container c
// reads, or "" if the path is not in a Secret volume c mounts.
func mountedSecret(t *testing.T, pod *corev1.PodTemplateSpec, c *corev1.Container, file string) (secret, key string) {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok || strings.Contains(rel, "/") {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name != vm.Name || v.Secret == nil {
				continue
			}
			if !vm.ReadOnly {
				t.Errorf("Secret volume %s mounted read-write", v.Name)
			}
			if m := v.Secret.DefaultMode; m != nil && *m&0o007 != 0 {
				t.Errorf("Secret volume %s: mode %o readable by others", v.Name, *m)
			}
			key = rel
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			return v.Secret.SecretName, key
		}
	}
	return "", ""
}

// holdTimeout is the node's --timeout (how long a /meta/connect is held).
func holdTimeout(t *testing.T, m *manifests) time.Duration {
	t.Helper()
	v := m.configMaps[nodeName].Data["BAYEUX_TIMEOUT"]
	if v == "" {
		return 30 * time.Second // the flag's default
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("BAYEUX_TIMEOUT %q: %v", v, err)
	}
	return d
}

func checkIngress(t *testing.T, r *render) {
	m := r.m
	if len(m.ingresses) == 0 {
		return
	}
	bayeuxPath := m.configMaps[nodeName].Data["BAYEUX_PATH"]
	for name, ing := range m.ingresses {
		t.Run(name, func(t *testing.T) {
			for _, rule := range ing.Spec.Rules {
				if rule.HTTP == nil {
					t.Fatalf("rule %+v without http paths", rule)
				}
				served := false
				for _, p := range rule.HTTP.Paths {
					checkIngressBackend(t, m, p)
					served = served || (p.Path == bayeuxPath || p.Path == "/") && p.PathType != nil && *p.PathType == networkingv1.PathTypePrefix
				}
				if !served {
					t.Errorf("host %q: no Prefix path serves %s", rule.Host, bayeuxPath)
				}
			}
			a := ing.Annotations
			if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
				return // annotations of another controller are not checked
			}
			// Idle websockets and held long-polls: the controller's
			// timeouts must outlast a held /meta/connect comfortably.
			min := 2 * holdTimeout(t, m)
			for _, k := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
				v, err := strconv.Atoi(a["nginx.ingress.kubernetes.io/"+k])
				if err != nil || time.Duration(v)*time.Second < min {
					t.Errorf("%s %q, want seconds >= %v", k, a["nginx.ingress.kubernetes.io/"+k], min)
				}
			}
			for k, want := range map[string]string{
				"proxy-buffering":         "off", // long-poll replies and pushes go out at once
				"proxy-request-buffering": "off",
				"proxy-next-upstream":     "off", // a long-poll is not retried on another node
			} {
				if got := a["nginx.ingress.kubernetes.io/"+k]; got != want {
					t.Errorf("%s %q, want %q", k, got, want)
				}
			}
			if _, ok := a["nginx.ingress.kubernetes.io/affinity"]; ok {
				t.Error("session affinity: any node serves any session, round-robin is wanted")
			}
		})
	}
}

// checkIngressBackend checks that an Ingress path reaches the client
// Service's HTTP port, never the API.
func checkIngressBackend(t *testing.T, m *manifests, p networkingv1.HTTPIngressPath) {
	t.Helper()
	b := p.Backend.Service
	if b == nil {
		t.Fatalf("path %s: no service backend", p.Path)
	}
	if b.Name != clientSvc {
		t.Errorf("path %s: backend %s, want the client Service %s", p.Path, b.Name, clientSvc)
	}
	svc := m.services[b.Name]
	if svc == nil {
		t.Fatalf("path %s: no Service %s", p.Path, b.Name)
	}
	for _, sp := range svc.Spec.Ports {
		if (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number) {
			if sp.TargetPort.String() != "http" {
				t.Errorf("path %s: Service port %s targets %s, want http", p.Path, sp.Name, sp.TargetPort.String())
			}
			return
		}
	}
	t.Errorf("path %s: port %+v is not a port of Service %s", p.Path, b.Port, b.Name)
}

func checkServiceMonitor(t *testing.T, r *render) {
	m := r.m
	for name, sm := range m.monitors {
		t.Run(name, func(t *testing.T) {
			var scraped []string
			for _, svc := range m.services {
				if !labelSelects(t, &sm.Spec.Selector, svc.Labels) {
					continue
				}
				for _, ep := range sm.Spec.Endpoints {
					for _, sp := range svc.Spec.Ports {
						if sp.Name == ep.Port {
							scraped = append(scraped, svc.Name+":"+sp.Name)
						}
					}
				}
			}
			// Each pod once, through the client Service's HTTP port.
			if len(scraped) != 1 || scraped[0] != clientSvc+":http" {
				t.Errorf("scrapes %v, want only %s:http", scraped, clientSvc)
			}
			for _, ep := range sm.Spec.Endpoints {
				if ep.Path != "/metrics" {
					t.Errorf("endpoint path %q, want /metrics", ep.Path)
				}
				if ep.Interval != "" {
					if _, err := time.ParseDuration(string(ep.Interval)); err != nil {
						t.Errorf("interval %q: %v", ep.Interval, err)
					}
				}
				wantScheme := "http"
				if r.nodeTLS {
					wantScheme = "https"
				}
				if got := ep.Scheme; got != nil && strings.ToLower(string(*got)) != wantScheme || got == nil && wantScheme != "http" {
					t.Errorf("scheme %v, want %s", got, wantScheme)
				}
			}
			if len(sm.Spec.NamespaceSelector.MatchNames) > 0 || sm.Spec.NamespaceSelector.Any {
				t.Errorf("namespaceSelector %+v: want the release's own namespace", sm.Spec.NamespaceSelector)
			}
		})
	}
}
