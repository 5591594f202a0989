package deploy

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

var nodes = []string{"node1", "node2", "node3"}

// root is the repository root (tests run in the package directory).
func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loadProject loads docker-compose.yml (with the given profiles enabled) the way docker compose does (schema
// validation, normalization, consistency checks), offline: interpolation sees
// an empty environment instead of the host's, and no .env file is read.
func loadProject(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	dir := root(t)
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("bayeux-deploy-test", true)
		o.Profiles = profiles
	})
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

func TestComposeServices(t *testing.T) {
	p := loadProject(t)
	for _, name := range []string{"redis", "node1", "node2", "node3", "lb"} {
		t.Run(name, func(t *testing.T) {
			if _, err := p.GetService(name); err != nil {
				t.Errorf("missing service %s (have %v)", name, p.ServiceNames())
			}
		})
	}
}

func TestComposeRedis(t *testing.T) {
	s := service(t, loadProject(t), "redis")
	if !strings.HasPrefix(s.Image, "redis:") {
		t.Errorf("image %q, want redis:*", s.Image)
	}
	if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "ping") {
		t.Errorf("healthcheck %+v, want a redis-cli ping", s.HealthCheck)
	}
	// Persistence, as the README advises: an append-only file in /data, on
	// a named volume that outlives the container.
	args := []string(s.Command)
	if i := slices.Index(args, "--appendonly"); i < 0 || i+1 >= len(args) || args[i+1] != "yes" {
		t.Errorf("command %q: want --appendonly yes", args)
	}
	if i := slices.Index(args, "--dir"); i >= 0 && (i+1 >= len(args) || args[i+1] != "/data") {
		t.Errorf("command %q: want --dir /data", args)
	}
	vol := false
	for _, v := range s.Volumes {
		vol = vol || (v.Type == types.VolumeTypeVolume && v.Target == "/data" && !v.ReadOnly)
	}
	if !vol {
		t.Errorf("volumes %+v, want a named volume at /data", s.Volumes)
	}
}

// TestComposeTrustedProxies: every client reaches the nodes through lb, so
// the nodes must trust lb's X-Forwarded-For (and only lb's), or the
// per-address limits would count the balancer as one client.
func TestComposeTrustedProxies(t *testing.T) {
	p := loadProject(t)
	lb := service(t, p, "lb")
	var lbAddr netip.Addr
	for _, n := range lb.Networks {
		if n != nil && n.Ipv4Address != "" {
			lbAddr = netip.MustParseAddr(n.Ipv4Address)
		}
	}
	if !lbAddr.IsValid() {
		t.Fatalf("lb has no fixed address (networks %+v): the nodes could not trust it", lb.Networks)
	}
	for _, name := range nodes {
		raw := env(service(t, p, name), "BAYEUX_TRUSTED_PROXIES")
		var prefixes []netip.Prefix
		for _, f := range strings.Split(raw, ",") {
			f = strings.TrimSpace(f)
			pf, err := netip.ParsePrefix(f)
			if err != nil {
				a, aerr := netip.ParseAddr(f)
				if aerr != nil {
					t.Errorf("%s: BAYEUX_TRUSTED_PROXIES %q: %v", name, raw, err)
					continue
				}
				pf = netip.PrefixFrom(a, a.BitLen())
			}
			prefixes = append(prefixes, pf)
		}
		covers := false
		for _, pf := range prefixes {
			covers = covers || pf.Contains(lbAddr)
			// The other nodes are not balancers.
			for _, other := range nodes {
				for _, n := range service(t, p, other).Networks {
					if n != nil && n.Ipv4Address != "" && pf.Contains(netip.MustParseAddr(n.Ipv4Address)) {
						t.Errorf("%s: BAYEUX_TRUSTED_PROXIES %q also trusts %s", name, raw, other)
					}
				}
			}
		}
		if !covers {
			t.Errorf("%s: BAYEUX_TRUSTED_PROXIES %q does not trust lb (%s)", name, raw, lbAddr)
		}
	}
	if !slices.Contains(nginxDirectives(readFile(t, "deploy/nginx/nginx.conf")), "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for") {
		t.Error("nginx does not pass X-Forwarded-For")
	}
}

func TestComposeNodes(t *testing.T) {
	p := loadProject(t)
	ids := map[string]string{}
	adverts := map[string]string{}
	joining := 0
	for _, name := range nodes {
		s := service(t, p, name)
		t.Run(name, func(t *testing.T) {
			if s.Build == nil {
				t.Fatal("no build section")
			}
			if rel, err := filepath.Rel(root(t), s.Build.Context); err != nil || rel != "." {
				t.Errorf("build context %q, want the repository root", s.Build.Context)
			}
			if df := s.Build.Dockerfile; df != "" && df != "Dockerfile" {
				t.Errorf("build dockerfile %q, want Dockerfile", df)
			}

			u, err := url.Parse(env(s, "BAYEUX_REDIS"))
			if err != nil || u.Scheme != "redis" || u.Hostname() != "redis" {
				t.Errorf("BAYEUX_REDIS %q, want redis://redis:6379", env(s, "BAYEUX_REDIS"))
			}
			if d, ok := s.DependsOn["redis"]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends_on redis %+v, want condition service_healthy", s.DependsOn)
			}
			if l := env(s, "BAYEUX_LISTEN"); l != ":8080" {
				t.Errorf("BAYEUX_LISTEN %q, want :8080 (the port nginx proxies to)", l)
			}

			id := env(s, "BAYEUX_NODE_ID")
			if id == "" {
				t.Error("BAYEUX_NODE_ID not set")
			} else if other, dup := ids[id]; dup {
				t.Errorf("BAYEUX_NODE_ID %q also used by %s", id, other)
			}
			ids[id] = name

			// The gossip layer only takes an IP literal; without a port it
			// would advertise port 0.
			adv := env(s, "BAYEUX_ADVERTISE")
			if adv != "" {
				ap, err := netip.ParseAddrPort(adv)
				if err != nil {
					t.Errorf("BAYEUX_ADVERTISE %q: want IP:port (host names are rejected by memberlist): %v", adv, err)
				} else {
					if ap.Port() != 7946 {
						t.Errorf("BAYEUX_ADVERTISE %q: want the gossip port 7946", adv)
					}
					var ips []string
					for _, n := range s.Networks {
						if n != nil && n.Ipv4Address != "" {
							ips = append(ips, n.Ipv4Address)
						}
					}
					if !slices.Contains(ips, ap.Addr().String()) {
						t.Errorf("BAYEUX_ADVERTISE %q is not one of the service's addresses %v", adv, ips)
					}
					if other, dup := adverts[adv]; dup {
						t.Errorf("BAYEUX_ADVERTISE %q also used by %s", adv, other)
					}
					adverts[adv] = name
				}
			}

			if join := env(s, "BAYEUX_JOIN"); join != "" {
				joining++
				for _, seed := range strings.Split(join, ",") {
					host, port, err := net.SplitHostPort(strings.TrimSpace(seed))
					if err != nil || port != "7946" || !slices.Contains(nodes, host) || host == name {
						t.Errorf("BAYEUX_JOIN seed %q, want another node's host:7946", seed)
					}
				}
			}
		})
	}
	if joining < 2 {
		t.Errorf("BAYEUX_JOIN set on %d nodes, want at least 2", joining)
	}
}

func TestComposeBalancer(t *testing.T) {
	s := service(t, loadProject(t), "lb")
	if !strings.HasPrefix(s.Image, "nginx:") {
		t.Errorf("image %q, want nginx:*", s.Image)
	}
	published := false
	for _, pt := range s.Ports {
		if pt.Published == "8080" && pt.Target == 8080 {
			published = true
		}
	}
	if !published {
		t.Errorf("ports %+v, want 8080:8080", s.Ports)
	}
	want := filepath.Join(root(t), "deploy", "nginx", "nginx.conf")
	mounted := false
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == want && v.Target == "/etc/nginx/nginx.conf" && v.ReadOnly {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("volumes %+v, want %s mounted read-only at /etc/nginx/nginx.conf", s.Volumes, want)
	}
	for _, n := range nodes {
		if _, ok := s.DependsOn[n]; !ok {
			t.Errorf("lb does not depend on %s (nginx resolves upstream names at start)", n)
		}
	}
}

// nginxDirectives returns the nginx config without comments, one statement
// per line, with whitespace collapsed ("server node1:8080 max_fails=0;").
func nginxDirectives(conf string) []string {
	var b strings.Builder
	for _, line := range strings.Split(conf, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	var out []string
	for _, st := range regexp.MustCompile(`[;{}]`).Split(b.String(), -1) {
		if st = strings.Join(strings.Fields(st), " "); st != "" {
			out = append(out, st)
		}
	}
	return out
}

func TestNginxConf(t *testing.T) {
	conf := readFile(t, "deploy/nginx/nginx.conf")
	dirs := nginxDirectives(conf)

	t.Run("upstream", func(t *testing.T) {
		m := regexp.MustCompile(`(?s)upstream\s+(\S+)\s*\{(.*?)\}`).FindStringSubmatch(conf)
		if m == nil {
			t.Fatal("no upstream block")
		}
		var servers []string
		for _, st := range nginxDirectives(m[2]) {
			if f := strings.Fields(st); f[0] == "server" && len(f) > 1 {
				servers = append(servers, f[1])
			} else if f[0] != "keepalive" {
				t.Errorf("unexpected upstream directive %q (round-robin only)", st)
			}
		}
		if want := []string{"node1:8080", "node2:8080", "node3:8080"}; !slices.Equal(servers, want) {
			t.Errorf("upstream servers %v, want %v", servers, want)
		}
		if !slices.Contains(dirs, "proxy_pass http://"+m[1]) {
			t.Errorf("no proxy_pass http://%s", m[1])
		}
	})

	for _, bad := range []string{"ip_hash", "hash", "sticky", "least_conn", "random"} {
		t.Run("no "+bad, func(t *testing.T) {
			for _, st := range dirs {
				if strings.Fields(st)[0] == bad {
					t.Errorf("%q: the balancer must be plain round-robin", st)
				}
			}
		})
	}

	for _, want := range []string{
		"listen 8080",
		"map $http_upgrade $connection_upgrade",
		"proxy_http_version 1.1",
		"proxy_set_header Upgrade $http_upgrade",
		"proxy_set_header Connection $connection_upgrade",
		"proxy_buffering off",
		"proxy_read_timeout 180s",
		"proxy_next_upstream off",
	} {
		t.Run(want, func(t *testing.T) {
			found := false
			for _, st := range dirs {
				found = found || strings.HasPrefix(st, want)
			}
			if !found {
				t.Errorf("missing %q", want)
			}
		})
	}
}

// stage is one FROM section of a Dockerfile: its FROM arguments and its
// instructions (continuations joined, comments dropped).
type stage struct {
	from  string
	instr []string
}

func dockerStages(t *testing.T) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(readFile(t, "Dockerfile")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		ins := strings.Join(strings.Fields(cur.String()), " ")
		cur.Reset()
		if ins == "" {
			continue
		}
		kw, rest, _ := strings.Cut(ins, " ")
		if strings.EqualFold(kw, "FROM") {
			stages = append(stages, stage{from: rest})
			continue
		}
		if len(stages) == 0 {
			if strings.EqualFold(kw, "ARG") {
				continue
			}
			t.Fatalf("instruction before FROM: %q", ins)
		}
		stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, strings.ToUpper(kw)+" "+rest)
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage Dockerfile, got %d stages", len(stages))
	}
	return stages
}

// image returns the image of a FROM line ("--platform=... img AS name").
func (s stage) image() string {
	for _, f := range strings.Fields(s.from) {
		if !strings.HasPrefix(f, "--") {
			return f
		}
	}
	return ""
}

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t)
	final := stages[len(stages)-1]

	t.Run("builder builds a static binary", func(t *testing.T) {
		built := false
		for _, s := range stages[:len(stages)-1] {
			cgoOff := false
			for _, ins := range s.instr {
				cgoOff = cgoOff || (strings.HasPrefix(ins, "ENV ") && strings.Contains(ins, "CGO_ENABLED=0"))
				if strings.HasPrefix(ins, "RUN ") && strings.Contains(ins, "go build") {
					if !cgoOff && !strings.Contains(ins, "CGO_ENABLED=0") {
						t.Errorf("%q: want CGO_ENABLED=0", ins)
					}
					if !strings.Contains(ins, "./cmd/node") {
						t.Errorf("%q: want ./cmd/node", ins)
					}
					built = true
				}
			}
		}
		if !built {
			t.Error("no go build in a builder stage")
		}
	})

	t.Run("builder Go matches go.mod", func(t *testing.T) {
		m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindStringSubmatch(readFile(t, "go.mod"))
		if m == nil {
			t.Fatal("no go directive in go.mod")
		}
		want := "golang:" + m[1] + "." + m[2]
		if img := stages[0].image(); img != want && !strings.HasPrefix(img, want+".") && !strings.HasPrefix(img, want+"-") {
			t.Errorf("builder image %q, want %s[.patch][-variant] (go.mod: go %s.%s)", img, want, m[1], m[2])
		}
	})

	t.Run("final stage is distroless static nonroot", func(t *testing.T) {
		if img := final.image(); !strings.HasPrefix(img, "gcr.io/distroless/static") || !strings.HasSuffix(img, ":nonroot") {
			t.Errorf("final image %q, want gcr.io/distroless/static*:nonroot", img)
		}
	})

	t.Run("final stage runs as nonroot", func(t *testing.T) {
		user := ""
		for _, ins := range final.instr {
			if u, ok := strings.CutPrefix(ins, "USER "); ok {
				user = u
			}
		}
		if user != "nonroot" && user != "nonroot:nonroot" && user != "65532" && user != "65532:65532" {
			t.Errorf("final USER %q, want nonroot", user)
		}
	})

	t.Run("final stage exposes and runs the node", func(t *testing.T) {
		var exposed []string
		entry := ""
		for _, ins := range final.instr {
			if e, ok := strings.CutPrefix(ins, "EXPOSE "); ok {
				exposed = append(exposed, strings.Fields(e)...)
			}
			if e, ok := strings.CutPrefix(ins, "ENTRYPOINT "); ok {
				entry = strings.ReplaceAll(e, " ", "")
			}
		}
		norm := map[string]bool{}
		for _, e := range exposed {
			if !strings.Contains(e, "/") {
				e += "/tcp"
			}
			norm[e] = true
		}
		for _, want := range []string{"8080/tcp", "7946/tcp", "7946/udp", "7947/tcp"} {
			if !norm[want] {
				t.Errorf("EXPOSE %v: missing %s", exposed, want)
			}
		}
		if entry != `["/bayeux-node"]` {
			t.Errorf(`ENTRYPOINT %s, want ["/bayeux-node"]`, entry)
		}
	})
}

func TestDockerignore(t *testing.T) {
	var entries []string
	for _, l := range strings.Split(readFile(t, ".dockerignore"), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			entries = append(entries, strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/"))
		}
	}
	for _, want := range []string{".git", "node_modules", "interop/node_modules"} {
		if !slices.Contains(entries, want) {
			t.Errorf(".dockerignore %v: missing %s", entries, want)
		}
	}
	// The build needs these (go:embed included).
	for _, keep := range []string{"go.mod", "go.sum", "cmd", "pkg", "api", "internal"} {
		if slices.Contains(entries, keep) {
			t.Errorf(".dockerignore excludes %s, which the build needs", keep)
		}
	}
}

// TestComposeNodeHealth: each node's healthcheck runs the image's own
// binary ("bayeux-node probe", the distroless image has no curl) against
// /readyz on its listen port, and the balancer waits for every node to be
// healthy.
func TestComposeNodeHealth(t *testing.T) {
	p := loadProject(t)
	lb := service(t, p, "lb")
	for _, name := range []string{"node1", "node2", "node3"} {
		s := service(t, p, name)
		if s.HealthCheck == nil {
			t.Errorf("%s: no healthcheck", name)
			continue
		}
		test := s.HealthCheck.Test
		port := strings.TrimPrefix(*s.Environment["BAYEUX_LISTEN"], ":")
		want := []string{"CMD", "/bayeux-node", "probe", "http://127.0.0.1:" + port + "/readyz"}
		if !slices.Equal(test, want) {
			t.Errorf("%s: healthcheck %q, want %q", name, test, want)
		}
		if d, ok := lb.DependsOn[name]; !ok || d.Condition != "service_healthy" {
			t.Errorf("lb depends on %s with %+v, want condition service_healthy", name, d)
		}
	}
}
