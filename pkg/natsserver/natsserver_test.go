package natsserver

import (
	"net"
	"strings"
	"testing"
	"time"
)

// A taken port is reported as such, at once, not as a server that never
// became ready.
func TestStartOnTakenPortSaysAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	ns, err := Start(Options{Port: port, StoreDir: t.TempDir()})
	if err == nil {
		ns.Shutdown()
		t.Fatal("started on a taken port")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not say the address is in use", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s to report a taken port", took)
	}
}

func TestStartServesOnRandomPort(t *testing.T) {
	ns, err := Start(Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if !strings.HasPrefix(ns.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("client url %s", ns.ClientURL())
	}
}
