package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestMonitoringProfile checks the optional Prometheus + Grafana profile:
// off by default, wired to the nodes and to the dashboard, and the
// dashboard only queries series the node really exports.
func TestMonitoringProfile(t *testing.T) {
	dir := root(t)
	if names := loadProject(t).ServiceNames(); slices.Contains(names, "prometheus") || slices.Contains(names, "grafana") {
		t.Fatalf("monitoring services start without the profile: %v", names)
	}
	p := loadProject(t, "monitoring")
	for _, name := range []string{"prometheus", "grafana"} {
		s := service(t, p, name)
		for _, v := range s.Volumes {
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", name, v.Source, err)
			}
		}
	}

	// Prometheus scrapes every node service on its HTTP port.
	var prom struct {
		ScrapeConfigs []struct {
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	readYAML(t, filepath.Join(dir, "deploy/prometheus/prometheus.yml"), &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("metrics_path %q", sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	var want []string
	for _, n := range p.ServiceNames() {
		if strings.HasPrefix(n, "node") {
			want = append(want, n+":8080")
		}
	}
	slices.Sort(targets)
	slices.Sort(want)
	if !slices.Equal(targets, want) {
		t.Errorf("scrape targets %v, want %v", targets, want)
	}

	// The dashboard parses, uses the provisioned datasource, and queries
	// only series defined in pkg/metrics.
	var ds struct {
		Datasources []struct{ UID string } `json:"datasources"`
	}
	readYAML(t, filepath.Join(dir, "deploy/grafana/provisioning/datasources/prometheus.yml"), &ds)
	var dash struct {
		Panels []struct {
			Title      string
			Datasource struct{ UID string }
			Targets    []struct{ Expr string }
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "deploy/grafana/bayeux-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "pkg/metrics/metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`Name: *"(\w+)"`).FindAllStringSubmatch(string(src), -1) {
		defined["bayeux_"+m[1]] = true
	}
	if len(dash.Panels) == 0 || len(defined) == 0 {
		t.Fatalf("%d panels, %d defined series", len(dash.Panels), len(defined))
	}
	series := regexp.MustCompile(`bayeux_\w+`)
	for _, panel := range dash.Panels {
		if len(ds.Datasources) == 0 || panel.Datasource.UID != ds.Datasources[0].UID {
			t.Errorf("panel %q uses datasource %q, not the provisioned one", panel.Title, panel.Datasource.UID)
		}
		for _, tg := range panel.Targets {
			for _, s := range series.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "_bucket"), "_sum"), "_count")
				if !defined[base] {
					t.Errorf("panel %q queries %s, which pkg/metrics does not define", panel.Title, s)
				}
			}
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
