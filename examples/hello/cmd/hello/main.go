// Command hello is the example appliance service: an HTTP server that
// answers every request with a greeting and the appliance's build id, and
// /healthz, its health check (ingot.yaml's health:), with "ok"; with
// -unhealthy, /healthz answers 503, as a build that runs but is broken
// would, which an update's trial boot must catch.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve HTTP on")
	unhealthy := flag.Bool("unhealthy", false, "answer /healthz with 503 Service Unavailable")
	flag.Parse()
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello from ingot"
	}
	buildID := os.Getenv("INGOT_BUILD_ID")

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\nbuild %s\n", greeting, buildID)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if *unhealthy {
			http.Error(w, "unhealthy on purpose (-unhealthy)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.Printf("serving on %s (build %s)", *listen, buildID)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
