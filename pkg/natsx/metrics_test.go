package natsx_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

func startJS(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := testkit.JetStream(t)
	testkit.WithTopology(t, js)
	return nc, js
}

// gather scrapes c through a registry and returns "name{k=v,…}" → value.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestCollectorConsumersAndDeadLetters(t *testing.T) {
	nc, js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for i := range 5 {
		m := &nats.Msg{Subject: natsx.SubjectRequests, Data: []byte(`{}`), Header: nats.Header{}}
		m.Header.Set(natsx.HeaderMsgID, "r"+string(rune('a'+i)))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{"llm.dlq.intake", "llm.dlq.intake", "llm.dlq.ledger"} {
		if _, err := js.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamRequests, jetstream.ConsumerConfig{
		Durable: "intake", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	// An ephemeral consumer is not reported.
	if _, err := js.CreateConsumer(ctx, natsx.StreamDLQ, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	// Two delivered, unacked; one of them naked and delivered again.
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("fetched %d, want 2", len(got))
	}
	if err := got[0].Nak(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server has the Nak before the next pull
		t.Fatal(err)
	}
	// The server may hand out a new message before the naked one comes
	// back; fetch until it does and count the new ones taken meanwhile.
	extra := 0
	for redelivered := false; !redelivered; {
		again, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range again.Messages() {
			n++
			md, _ := m.Metadata()
			switch {
			case md == nil:
				t.Fatal("no metadata")
			case md.NumDelivered == 2:
				redelivered = true
			default:
				extra++
			}
		}
		if n == 0 {
			t.Fatal("the naked message was not redelivered")
		}
	}

	c := natsx.NewCollector(js, zerolog.Nop())
	m := gather(t, c)
	want := map[string]float64{
		"switchyard_jetstream_consumer_pending{consumer=intake,stream=LLM_REQUESTS}":     float64(3 - extra),
		"switchyard_jetstream_consumer_ack_pending{consumer=intake,stream=LLM_REQUESTS}": float64(2 + extra),
		"switchyard_jetstream_consumer_redelivered{consumer=intake,stream=LLM_REQUESTS}": 1,
		"switchyard_dlq_dead_letters{stage=intake}":                                      2,
		"switchyard_dlq_dead_letters{stage=ledger}":                                      1,
		"switchyard_dlq_dead_letters{stage=router}":                                      0,
		"switchyard_jetstream_scrape_success{}":                                          1,
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	var consumers int
	for k := range m {
		if strings.HasPrefix(k, "switchyard_jetstream_consumer_pending{") {
			consumers++
		}
	}
	if consumers != 1 {
		t.Errorf("reported %d consumers, want only the durable one: %v", consumers, m)
	}
}

func TestCollectorFailedScrape(t *testing.T) {
	nc, js := startJS(t)
	nc.Close()
	start := time.Now()
	m := gather(t, natsx.NewCollector(js, zerolog.Nop()))
	if d := time.Since(start); d > natsx.ScrapeTimeout+time.Second {
		t.Errorf("scrape took %s, above the %s bound", d, natsx.ScrapeTimeout)
	}
	if v, ok := m["switchyard_jetstream_scrape_success{}"]; !ok || v != 0 {
		t.Errorf("scrape_success = %v (present %v), want 0", v, ok)
	}
}
