package main

import (
	"net/http"
	"testing"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

func TestPprofOnlyWithFlag(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, http.StatusNotFound},
		{[]string{"--pprof"}, http.StatusOK},
	}
	for _, tt := range tests {
		n := testproc.StartNode(t, nil, tt.args...)
		resp, err := http.Get(n.Base + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("args %v: /debug/pprof/ = %d, want %d", tt.args, resp.StatusCode, tt.want)
		}
	}
}
