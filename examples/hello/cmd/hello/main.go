// Command hello is the example appliance service: an HTTP server that
// answers every request with a greeting and the appliance's build id, and
// /healthz, its health check (ingot.yaml's health:), with "ok"; with
// -unhealthy, /healthz answers 503, as a build that runs but is broken
// would, which an update's trial boot must catch. With -tick it prints
// "tick N" (N = 1, 2, …) at that interval, lines whose order and gaps a
// log receiver can check, on a fixed schedule (line N is due N intervals
// after the start, so a late wake-up catches up and the rate holds); with
// -crashable, GET /crash makes it exit with
// status 2, a crash on demand for the supervisor and its metrics.
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
	tick := flag.Duration("tick", 0, "print \"tick N\" at this interval (0: never)")
	crashable := flag.Bool("crashable", false, "exit with status 2 on GET /crash")
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
	if *crashable {
		mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
			log.Printf("crashing on request (-crashable)")
			os.Exit(2)
		})
	}
	if *tick > 0 {
		go func() {
			start := time.Now()
			for n := 1; ; n++ {
				if wait := time.Until(start.Add(time.Duration(n) * *tick)); wait > 0 {
					time.Sleep(wait)
				}
				fmt.Printf("tick %d\n", n)
			}
		}()
	}
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
