package serverapi

import (
	"bytes"
	"embed"
	"net/http"
	"path"
)

//go:embed admin
var adminFS embed.FS

// adminHandler serves the admin console: plain files, no third-party
// code. The page calls the API with the key the operator signs in with and
// follows a channel live over Bayeux (bayeuxPath on the same listener).
func adminHandler(clientJS []byte, bayeuxPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := path.Base(r.URL.Path)
		if r.URL.Path == "/admin/" {
			name = "index.html"
		}
		var body []byte
		switch name {
		case "bayeux.js":
			body = clientJS
		default:
			b, err := adminFS.ReadFile("admin/" + name)
			if err != nil || path.Dir(r.URL.Path) != "/admin" {
				http.NotFound(w, r)
				return
			}
			body = bytes.ReplaceAll(b, []byte("{{BAYEUX_PATH}}"), []byte(bayeuxPath))
		}
		switch path.Ext(name) {
		case ".html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
		case ".js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		case ".css":
			w.Header().Set("Content-Type", "text/css; charset=utf-8")
		}
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:")
		_, _ = w.Write(body)
	})
}
