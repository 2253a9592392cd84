package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/dlq"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = Main(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestHelpExitsZero: every command and subcommand prints its help with -h
// and exits 0, without connecting to anything.
func TestHelpExitsZero(t *testing.T) {
	// Nothing listens here: a command that tried to connect would fail.
	t.Setenv("SWITCHYARD_NATS_URL", "nats://127.0.0.1:1")
	t.Setenv("SWITCHYARD_CLICKHOUSE_ADDR", "127.0.0.1:1")
	for _, args := range [][]string{
		{"-h"}, {"report", "-h"}, {"report", "--help"}, {"report", "cost", "-h"}, {"dlq", "-h"}, {"dlq", "ls", "-h"}, {"dlq", "replay", "-h"},
		{"policy", "-h"}, {"policy", "apply", "-h"}, {"ledger", "-h"}, {"ledger", "migrate", "-h"}, {"submit", "-h"}, {"demo", "-h"}, {"bench", "-h"}, {"sim", "-h"}, {"provision", "-h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, stderr := run(t, args...)
			if code != 0 || !strings.Contains(strings.ToLower(stderr), "usage") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
		})
	}
}

func natsForCLI(t *testing.T) jetstream.JetStream {
	t.Helper()
	url := testkit.Server(t)
	_, js := testkit.Connect(t, url)
	testkit.WithTopology(t, js)
	t.Setenv("SWITCHYARD_NATS_URL", url)
	return js
}

// TestPolicyApplyFlagsAfterFile: `policy apply FILE -by … -m …`, the order
// the README shows, applies the file and records who and why.
func TestPolicyApplyFlagsAfterFile(t *testing.T) {
	natsForCLI(t)
	code, out, stderr := run(t, "policy", "apply", "../../../deployments/policy.yaml", "-by", "alice", "-m", "raise the floor")
	if code != 0 || !strings.Contains(out, "applied revision") || !strings.Contains(out, "by alice") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, stderr)
	}
	code, out, _ = run(t, "policy", "history")
	if code != 0 || !strings.Contains(out, "alice") || !strings.Contains(out, "raise the floor") {
		t.Fatalf("history (exit %d):\n%s", code, out)
	}
	if code, _, stderr := run(t, "policy", "apply", "a.yaml", "b.yaml"); code != 2 {
		t.Errorf("two files: exit %d %s", code, stderr)
	}
}

// TestDLQReplayDryRunShowsPatchedEnvelope: --dry-run prints the JSON that
// would be published, after --patch, and where it would go (or why it would
// be skipped: its request was answered); it publishes nothing and keeps the
// dead letter.
func TestDLQReplayDryRunShowsPatchedEnvelope(t *testing.T) {
	js := natsForCLI(t)
	m := &nats.Msg{Subject: natsx.DLQSubject(natsx.StageIntake), Data: []byte(`{"id":"r1","tenant":"acme","colour":"red","messages":[{"role":"user","content":"hi"}]}`), Header: nats.Header{}}
	m.Header.Set(natsx.HeaderStage, natsx.StageIntake)
	m.Header.Set(natsx.HeaderReason, "invalid_request")
	m.Header.Set(natsx.HeaderOrigSubject, natsx.SubjectRequests)
	m.Header.Set(natsx.HeaderRequestID, "r1")
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	seq := strconv.FormatUint(ack.Sequence, 10)
	// The intake answered it invalid_request: only a corrected request, with
	// -reanswer, may be answered again.
	reply := &nats.Msg{Subject: "llm.store.replies.acme.r1", Header: nats.Header{},
		Data: []byte(`{"id":"r1","status":"error","error":{"code":"invalid_request","message":"colour","retryable":false}}`)}
	if _, err := js.PublishMsg(context.Background(), reply); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := run(t, "dlq", "replay", "-seq", seq, "-patch", `{"colour":null,"user":"fixed"}`, "-dry-run")
	if code != 0 || !strings.Contains(out, "skipped: already answered: invalid_request (final)") {
		t.Fatalf("dry run without -reanswer (exit %d): %s %s", code, out, stderr)
	}
	code, out, stderr = run(t, "dlq", "replay", "-seq", seq, "-patch", `{"colour":null,"user":"fixed"}`, "-reanswer", "-dry-run")
	if code != 0 || !strings.Contains(out, "second, final reply") {
		t.Fatalf("exit %d: %s %s", code, out, stderr)
	}
	body := out[strings.Index(out, "\n")+1:]
	var shown map[string]any
	if err := json.Unmarshal([]byte(body), &shown); err != nil {
		t.Fatalf("dry run did not print the envelope: %v\n%s", err, out)
	}
	if _, ok := shown["colour"]; ok || shown["user"] != "fixed" || !strings.Contains(out, "llm.requests") {
		t.Fatalf("dry run shows %s", out)
	}
	s, err := js.Stream(context.Background(), natsx.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("dry run published: %v %+v", err, info.State)
	}
	if code, out, _ := run(t, "dlq", "show", seq); code != 0 || !strings.Contains(out, "colour") {
		t.Fatalf("dead letter gone after a dry run (exit %d): %s", code, out)
	}
}

// TestDLQShowSaysTruncated: a dead letter whose payload was cut to fit the
// DLQ says so, with the original size, and is not replayed.
func TestDLQShowSaysTruncated(t *testing.T) {
	js := natsForCLI(t)
	hdr := nats.Header{}
	data := dlq.CapPayload([]byte(`{"id":"big","tenant":"acme","user":"`+strings.Repeat("x", 1_000_000)+`"}`), hdr)
	hdr.Set(natsx.HeaderStage, natsx.StageIntake)
	hdr.Set(natsx.HeaderReason, "payload_too_large")
	hdr.Set(natsx.HeaderOrigSubject, natsx.SubjectRequests)
	ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: natsx.DLQSubject(natsx.StageIntake), Data: data, Header: hdr})
	if err != nil {
		t.Fatal(err)
	}
	seq := strconv.FormatUint(ack.Sequence, 10)
	if code, out, _ := run(t, "dlq", "show", seq); code != 0 || !strings.Contains(out, "the payload was 1000038 bytes; the first 65536 are kept") {
		t.Fatalf("show (exit %d):\n%.400s", code, out)
	}
	if code, out, _ := run(t, "dlq", "replay", "-seq", seq); code == 0 || !strings.Contains(out, "truncated") {
		t.Fatalf("replay of a truncated dead letter (exit %d): %s", code, out)
	}
}
