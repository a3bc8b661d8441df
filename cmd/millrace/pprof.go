package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
)

// pprofPrefix is where `millrace dev --pprof` and the roles' --pprof serve
// Go's profiles.
const pprofPrefix = "/debug/pprof/"

// checkPprof refuses --pprof on an address other than loopback: the
// profiles bypass authentication.
func checkPprof(on bool, addr string) error {
	if on && !isLoopbackAddr(addr) {
		return fmt.Errorf("--pprof serves profiles without authentication: listen on a loopback address, not %s", addr)
	}
	return nil
}

// withPprof serves Go's runtime profiles (net/http/pprof) under
// /debug/pprof/ in front of h, for `millrace dev --pprof` and `millrace
// <role> --pprof` on a loopback address (checkPprof):
//
//	go tool pprof 'http://127.0.0.1:8080/debug/pprof/profile?seconds=10'
//	curl 'http://127.0.0.1:8080/debug/pprof/goroutine?debug=1'
//	curl -o trace.out 'http://127.0.0.1:8080/debug/pprof/trace?seconds=2'
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(pprofPrefix, pprof.Index) // heap, goroutine, block, mutex, …
	mux.HandleFunc(pprofPrefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc(pprofPrefix+"profile", pprof.Profile)
	mux.HandleFunc(pprofPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(pprofPrefix+"trace", pprof.Trace)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, pprofPrefix) {
			mux.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
