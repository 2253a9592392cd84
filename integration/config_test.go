package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/services/edge"
	"github.com/switchyard-llm/switchyard/services/executor"
	"github.com/switchyard-llm/switchyard/services/gate"
	"github.com/switchyard-llm/switchyard/services/intake"
	"github.com/switchyard-llm/switchyard/services/ledger"
	"github.com/switchyard-llm/switchyard/services/router"
	"github.com/switchyard-llm/switchyard/services/sim"
	"github.com/switchyard-llm/switchyard/services/switchyard/app"
	"github.com/switchyard-llm/switchyard/services/switchyard/cli"
)

// loaders read each command's configuration the way its main does (the
// same struct, the same envcfg walk), from a given environment.
var loaders = map[string]func(envcfg.Lookup) (any, error){
	"up":       func(l envcfg.Lookup) (any, error) { var c app.Config; return c, envcfg.Process(l, &c) },
	"intake":   process[intake.ServiceConfig],
	"router":   process[router.ServiceConfig],
	"executor": process[executor.ServiceConfig],
	"gate":     process[gate.ServiceConfig],
	"ledger":   process[ledger.ServiceConfig],
	"sim":      process[sim.BinaryConfig],
	"edge":     process[edge.ServiceConfig],
	"report":   func(l envcfg.Lookup) (any, error) { return cli.LoadLedgerConfig(l) },
}

func process[C any](l envcfg.Lookup) (any, error) {
	var c C
	err := envcfg.Process(l, &c)
	return c, err
}

type readmeVar struct {
	name    string
	readers []string
}

// readmeVariables parses the README's configuration table: every
// `SWITCHYARD_*` name of the first column and the "read by" column.
func readmeVariables(t *testing.T) []readmeVar {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nameRE := regexp.MustCompile("`(SWITCHYARD_[A-Z0-9_]+)`")
	var out []readmeVar
	inTable := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| variable | default | read by |") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if len(out) > 0 {
				break
			}
			continue
		}
		cols := strings.Split(strings.Trim(line, "|"), "|")
		if len(cols) < 4 || strings.HasPrefix(strings.TrimSpace(cols[0]), "---") {
			continue
		}
		for _, m := range nameRE.FindAllStringSubmatch(cols[0], -1) {
			v := readmeVar{name: m[1]}
			for _, r := range strings.Split(cols[2], ",") {
				switch r = strings.TrimSpace(r); r {
				case "services":
					v.readers = append(v.readers, "intake", "router", "executor", "gate", "ledger")
				case "stage":
					v.readers = append(v.readers, strings.ToLower(strings.Split(v.name, "_")[1]))
				default:
					v.readers = append(v.readers, r)
				}
			}
			out = append(out, v)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found %d variables in the README's configuration table; is its header still `| variable | default | read by | meaning |`?", len(out))
	}
	return out
}

// Every variable the README documents changes the configuration of every
// command the README says reads it. (Before: `up` read
// SWITCHYARD_LEDGER_CLICKHOUSE_* and SWITCHYARD_LEDGER_LEDGER_BATCH_SIZE, so
// SWITCHYARD_CLICKHOUSE_DATABASE sent `report` to another database.)
func TestReadmeVariablesAreRead(t *testing.T) {
	for _, v := range readmeVariables(t) {
		t.Run(v.name, func(t *testing.T) {
			if len(v.readers) == 0 {
				t.Fatal("the README names no command that reads it")
			}
			for _, r := range v.readers {
				load, ok := loaders[r]
				if !ok {
					t.Fatalf("README names reader %q, which is not a command", r)
				}
				if !changes(t, load, v.name) {
					t.Errorf("%s: setting %s changes nothing in its configuration", r, v.name)
				}
			}
		})
	}
}

// changes reports whether some value of name gives a configuration other
// than the defaults.
func changes(t *testing.T, load func(envcfg.Lookup) (any, error), name string) bool {
	t.Helper()
	base, err := load(envcfg.LookupMap(nil))
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, value := range []string{"7", "readme-test-7", "false", "true", "7s", "0.5", "a,b"} {
		got, err := load(envcfg.LookupMap(map[string]string{name: value}))
		if err == nil && !reflect.DeepEqual(got, base) {
			return true
		}
	}
	return false
}

// A plain NATS_URL (natscli users have one), LOG_LEVEL, POLICY … in the
// shell changes no command's configuration: only SWITCHYARD_ names count.
// (Before: envconfig fell back to the unprefixed name, so a natscli user's
// NATS_URL turned `up` into a client of another server.)
func TestPlainVariablesAreNotRead(t *testing.T) {
	plain := map[string]string{}
	for _, v := range readmeVariables(t) {
		plain[strings.TrimPrefix(v.name, "SWITCHYARD_")] = "7"
	}
	plain["NATS_URL"] = "nats://elsewhere:4222"
	for name, load := range loaders {
		base, err := load(envcfg.LookupMap(nil))
		if err != nil {
			t.Fatal(err)
		}
		got, err := load(envcfg.LookupMap(plain))
		if err != nil {
			t.Errorf("%s: plain variables were parsed: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, base) {
			t.Errorf("%s: plain (unprefixed) variables changed the configuration:\n%+v\nwant\n%+v", name, got, base)
		}
	}
	cfg, err := app.LoadConfig(envcfg.LookupMap(plain))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATSURL != "" {
		t.Fatalf("up would connect to %q instead of embedding its server", cfg.NATSURL)
	}
}

// Subject and stream constants must not make a service binary link the
// NATS server: only `up` and the tests embed one.
func TestServiceBinariesDoNotLinkNATSServer(t *testing.T) {
	var pkgs []string
	for _, s := range []string{"intake", "router", "executor", "gate", "ledger", "sim", "edge"} {
		pkgs = append(pkgs, fmt.Sprintf("github.com/switchyard-llm/switchyard/services/%s/cmd/%s", s, s))
	}
	for _, p := range pkgs {
		out, err := exec.Command("go", "list", "-deps", p).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", p, err, out)
		}
		deps := strings.Split(string(out), "\n")
		if i := slices.IndexFunc(deps, func(d string) bool { return strings.Contains(d, "nats-server") }); i >= 0 {
			t.Errorf("%s links %s", p, deps[i])
		}
	}
}

// buildCmd builds one of the repository's commands into dir.
func buildCmd(t *testing.T, dir, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// `switchyard up` on an occupied port says "address already in use" and
// exits non-zero at once (before: the embedded NATS case waited 10 s and
// said "not ready"; a taken HTTP address was only logged and `up` ran on
// without /healthz). A plain NATS_URL pointing elsewhere is ignored.
func TestUpStartErrors(t *testing.T) {
	dir := t.TempDir()
	bin := buildCmd(t, dir, "switchyard", "github.com/switchyard-llm/switchyard/services/switchyard")
	routerBin := buildCmd(t, dir, "router", "github.com/switchyard-llm/switchyard/services/router/cmd/router")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	port := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	base := map[string]string{
		"SWITCHYARD_POLICY": testPolicy, "SWITCHYARD_NATS_PORT": "-1", "SWITCHYARD_SIM": "on",
		"SWITCHYARD_SIM_ADDR": "127.0.0.1:0", "SWITCHYARD_HTTP_ADDR": "127.0.0.1:0", "SWITCHYARD_LEDGER": "false", "SWITCHYARD_EDGE_ADDR": "127.0.0.1:0",
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // "" → up must start
		bin     string // default: switchyard up
	}{
		{"router binary: http address taken", map[string]string{"SWITCHYARD_HTTP_ADDR": addr}, "address already in use", routerBin},
		{"http address taken", map[string]string{"SWITCHYARD_HTTP_ADDR": addr}, "address already in use", ""},
		{"nats port taken", map[string]string{"SWITCHYARD_NATS_PORT": port}, "address already in use", ""},
		{"simulator address taken", map[string]string{"SWITCHYARD_SIM_ADDR": addr}, "address already in use", ""},
		{"edge address taken", map[string]string{"SWITCHYARD_EDGE_ADDR": addr}, "address already in use", ""},
		{"plain NATS_URL is not ours", map[string]string{"NATS_URL": "nats://" + addr}, "", ""},
		// A redelivery an AckWait later must still fall in the streams'
		// dedupe window (2 min), or its hand-off is stored twice.
		{"ack wait past half the dedupe window", map[string]string{"SWITCHYARD_EXECUTOR_ACK_WAIT": "90s"}, "SWITCHYARD_EXECUTOR_ACK_WAIT: 1m30s is more than half the internal streams' dedupe window", ""},
		{"ack wait at half the dedupe window", map[string]string{"SWITCHYARD_ROUTER_ACK_WAIT": "60s"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, "up")
			if tt.bin != "" {
				cmd = exec.Command(tt.bin)
			}
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "SWITCHYARD_DATA_DIR=" + t.TempDir()}
			for k, v := range base {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			for k, v := range tt.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() { _ = cmd.Process.Kill(); <-exited }()
			first := make(chan string, 1)
			go func() {
				line, _ := bufio.NewReader(stdout).ReadString('\n')
				first <- line
			}()
			start := time.Now()
			if tt.wantErr == "" {
				select {
				case line := <-first:
					if !strings.HasPrefix(line, "switchyard up: NATS nats://127.0.0.1:") || strings.Contains(line, addr) {
						t.Fatalf("up did not start its own server: %q\n%s", line, stderr.String())
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("up did not start\n%s", stderr.String())
				}
				return
			}
			select {
			case err = <-exited:
				exited <- err // for the deferred wait
			case <-time.After(15 * time.Second):
				t.Fatalf("up still running 15 s after an address conflict\n%s", stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("exit: %v, want non-zero\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Fatalf("stderr does not say %q:\n%s", tt.wantErr, stderr.String())
			}
			if took := time.Since(start); took > 8*time.Second {
				t.Fatalf("took %s to fail", took)
			}
		})
	}
}
