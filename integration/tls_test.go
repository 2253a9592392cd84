package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchyard-llm/switchyard/pkg/client"
	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
)

// testCA writes a self-signed CA and a server certificate for 127.0.0.1
// signed by it into dir; it returns the CA, certificate and key files.
func testCA(t *testing.T, dir, name string) (ca, cert, key string) {
	t.Helper()
	write := func(file, typ string, der []byte) string {
		path := filepath.Join(dir, file)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write(name+"-ca.pem", "CERTIFICATE", caDER), write(name+"-cert.pem", "CERTIFICATE", srvDER), write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

// TestTLS: with SWITCHYARD_NATS_TLS_CERT/KEY/CA the embedded server takes
// TLS connections only: the pipeline and a tenant holding the CA work;
// a plain connection, and one trusting another CA, are refused.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testCA(t, dir, "good")
	otherCA, _, _ := testCA(t, dir, "other")
	e := start(t, withAuth, func(c *app.Config) { c.TLSCA, c.TLSCert, c.TLSKey = ca, cert, key })

	creds := e.tenantCreds(e.tenant)
	tests := []struct {
		name    string
		auth    natsx.ClientAuth
		refusal string // "" connects
	}{
		{"tenant trusting the CA", natsx.ClientAuth{Creds: creds, TLSCA: ca}, ""},
		{"plain connection", natsx.ClientAuth{Creds: creds}, "tls"},
		{"trusting another CA", natsx.ClientAuth{Creds: creds, TLSCA: otherCA}, "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.auth.Options()
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(e.sys.NATSURL, append(opts, nats.MaxReconnects(0))...)
			if tc.refusal != "" {
				if err == nil {
					nc.Close()
					t.Fatalf("connected; want a refusal mentioning %q", tc.refusal)
				}
				if !strings.Contains(strings.ToLower(err.Error()), tc.refusal) {
					t.Fatalf("refused with %v, want one mentioning %q", err, tc.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if !nc.TLSRequired() {
				t.Fatal("the connection is not TLS")
			}
			cl, err := client.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			w, err := cl.Await("llm.replies." + e.tenant + ".tls1")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cl.Publish(ctx, e.request("tls1", "chat", "over TLS")); err != nil {
				t.Fatal(err)
			}
			if r, err := w.Wait(ctx); err != nil || r.Status != envelope.StatusOK {
				t.Fatalf("reply over TLS: %+v %v", r, err)
			}
		})
	}
}

// TestNetworkListenNeedsAuth: `up` serves other machines' executors
// (SWITCHYARD_NATS_HOST other than loopback) only with authentication on.
func TestNetworkListenNeedsAuth(t *testing.T) {
	tests := []struct {
		host, auth string
		ok         bool
	}{
		{"127.0.0.1", app.AuthOff, true},
		{"localhost", app.AuthOff, true},
		{"0.0.0.0", app.AuthOff, false},
		{"192.0.2.10", app.AuthOff, false},
		{"0.0.0.0", app.AuthOn, true},
	}
	for _, tc := range tests {
		t.Run(tc.host+"/"+tc.auth, func(t *testing.T) {
			// LoadConfig validates, as `up` does before it starts anything.
			_, err := app.LoadConfig(envcfg.LookupMap(map[string]string{"SWITCHYARD_NATS_HOST": tc.host, "SWITCHYARD_NATS_AUTH": tc.auth}))
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "SWITCHYARD_NATS_HOST")) {
				t.Fatalf("accepted (%v); want SWITCHYARD_NATS_HOST refused without auth", err)
			}
		})
	}
}
