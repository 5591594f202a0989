package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSubcommands(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer ready.Close()
	unready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer unready.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	tests := []struct {
		args    []string
		ok      bool
		code    int
		errWant string
	}{
		{[]string{"probe", ready.URL + "/readyz"}, true, 0, ""},
		{[]string{"probe", unready.URL + "/readyz"}, true, 1, "503"},
		{[]string{"probe", closedURL + "/readyz"}, true, 1, "refused"},
		{[]string{"probe", "::bad"}, true, 2, "probe"},
		{[]string{"sleep", "0s"}, true, 0, ""},
		{[]string{"sleep", "forever"}, true, 2, "want a duration"},
		{[]string{"--listen", ":0"}, false, 0, ""},
		{[]string{"probe"}, false, 0, ""},
	}
	for _, tc := range tests {
		var stderr bytes.Buffer
		code, ok := subcommand(tc.args, &stderr)
		if ok != tc.ok || code != tc.code || !strings.Contains(stderr.String(), tc.errWant) {
			t.Errorf("%v: got code %d ok %v stderr %q; want code %d ok %v stderr with %q", tc.args, code, ok, stderr.String(), tc.code, tc.ok, tc.errWant)
		}
	}
}
