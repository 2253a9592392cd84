package natsauth

import (
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
)

// ServiceInboxPrefix is the private inbox prefix of a service's
// connection (nats.CustomInboxPrefix): only that service may subscribe
// under it, so nobody else can answer its requests or its publish
// acknowledgements. It is outside `_INBOX.>`, the tenants' inbox space.
func ServiceInboxPrefix(service string) string { return "_INBOX_" + service }

// service is what one service may do beyond the reads every service needs.
type service struct {
	publish  []string // subjects it owns
	streams  []string // in-memory streams it creates itself (a NATS restart loses them)
	consumes []string // "<stream>.<durable>" it pulls from
	kv       []string // buckets it writes
	core     []string // core subscriptions besides its inbox
	// responds: it answers requests on its core subscriptions, once each
	// (the NATS allow_responses permission), without publish rights on
	// anyone's inbox.
	responds bool
}

// Buckets a service writes (reading any bucket is allowed: the policy,
// the breakers and the budgets are read everywhere).
const (
	kvBudgets  = "switchyard_budgets"
	kvBreakers = "switchyard_breakers"
	kvHedges   = "switchyard_hedges"
	kvCache    = "switchyard_cache"
	kvDedupe   = "intake_dedupe"
	// The edge's per-key rpm and in-flight counters (services/edge
	// RateBucket, InFlightBucket): the edge creates and writes them.
	kvEdgeRate     = "edge_key_rate"
	kvEdgeInFlight = "edge_key_inflight"
)

// allBuckets are every KV bucket of the system: any service may read and
// watch them.
var allBuckets = []string{"switchyard_policy", kvBudgets, kvBreakers, kvHedges, kvCache, kvDedupe, "api_keys", kvEdgeRate, kvEdgeInFlight}

// readStreams are the streams services read single messages of.
func readStreams(vendors []string) []string {
	out := []string{"LLM_REPLIES"}
	for _, b := range allBuckets {
		out = append(out, "KV_"+b)
	}
	for _, v := range vendors {
		out = append(out, limiterStreams(v)...)
	}
	return out
}

// limiterStreams are pkg/limiter's in-memory windows of a vendor, which
// every process creates (a NATS restart loses them).
func limiterStreams(vendor string) []string {
	name := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(vendor))
	return []string{"LLM_LIMIT_RPM_" + name, "LLM_LIMIT_TPM_" + name}
}

func services(vendors []string) map[string]service {
	out := map[string]service{
		// Replies are published for LLM_REPLIES to store
		// (natsx.SubjectReplyStore); only the stream delivers them on
		// llm.replies.>, so no service publishes there.
		"intake": {
			// llm.router.route: classified work handed to a router directly.
			publish:  []string{"llm.classified", "llm.router.route", "llm.store.replies.>", "_INBOX.>", "llm.telemetry.request", "llm.dlq.intake"},
			consumes: []string{"LLM_REQUESTS.intake"},
			kv:       []string{kvDedupe},
			streams:  []string{"KV_" + kvDedupe},
		},
		"router": {
			// llm.telemetry.attempt: the rows of a hedge branch (see pipeline.FinishOuts).
			publish:  []string{"llm.exec.>", "llm.store.replies.>", "_INBOX.>", "llm.deltas.>", "llm.telemetry.request", "llm.telemetry.requests", "llm.telemetry.attempt", "llm.dlq.router", "llm.alerts.circuit", "llm.observed.attempts"},
			consumes: []string{"LLM_PIPELINE.router"},
			kv:       []string{kvBudgets, kvBreakers, kvHedges, kvCache},
			// llm.observed.attempts: the router replicas share the judged
			// attempts they learned from verdicts (latency-aware
			// strategies) on core NATS: live only, no stream holds them.
			// llm.router.route, llm.router.verdict: intakes' direct
			// hand-offs of classified work and gates' of verdicts
			// (pipeline.DirectDoor), answered on the asker's inbox.
			core:     []string{"llm.observed.attempts", "llm.router.route", "llm.router.verdict"},
			responds: true,
		},
		"gate": {
			// llm.router.verdict: verdicts handed to a router directly.
			publish:  []string{"llm.verdicts", "llm.router.verdict", "llm.dlq.gate"},
			consumes: []string{"LLM_PIPELINE.gate"},
			kv:       []string{kvCache},
			// llm.gate.judge: executors' direct hand-offs of results
			// (pipeline.DirectDoor), answered on the asking executor's
			// inbox.
			core:     []string{"llm.gate.judge"},
			responds: true,
		},
		"ledger": {
			publish:  []string{"llm.dlq.ledger", "llm.alerts.>"},
			consumes: []string{"LLM_TELEMETRY.ledger"},
		},
		"edge": {
			publish: []string{"llm.requests"},
			core:    []string{"llm.replies.>", "llm.deltas.>"},
			kv:      []string{kvEdgeRate, kvEdgeInFlight},
			streams: []string{"KV_" + kvEdgeRate, "KV_" + kvEdgeInFlight},
		},
	}
	for _, v := range vendors {
		out["executor-"+v] = service{
			publish:  []string{"llm.results", "llm.gate.judge", "llm.verdicts", "llm.telemetry.attempt", "llm.dlq.executor", "llm.alerts.circuit", "llm.deltas.>", "llm.limit.>"},
			consumes: []string{"LLM_PIPELINE.exec-" + v},
			kv:       []string{kvBreakers, kvHedges},
		}
	}
	return out
}

// responseWindow is how long a responding service may answer a request
// it received: past the writers' longest wait for a direct hand-off.
const responseWindow = time.Minute

// anchorPrefix is natsx.SubjectAnchorPrefix (natsx imports this package).
const anchorPrefix = "llm.anchor."

// ServicePermissions are the users of the service processes, by user
// name: each publishes only the subjects it owns, pulls only from its own
// durable consumer, writes only its buckets, and reads only its private
// inbox. No service creates, updates, deletes or purges a stream or
// deletes a consumer: `up` (the operator) manages them.
func ServicePermissions(vendors []string) map[string]jwt.Permissions {
	out := map[string]jwt.Permissions{}
	for name, s := range services(vendors) {
		var p jwt.Permissions
		p.Pub.Allow.Add(s.publish...)
		// Reads every service needs: stream/consumer info (metrics,
		// start-up checks), reads and watches of every bucket, the
		// vendors' limiter windows, a stored reply (the executor checks
		// one before calling a vendor again).
		p.Pub.Allow.Add("$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
			"$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.LIST.*")
		for _, st := range readStreams(vendors) {
			p.Pub.Allow.Add("$JS.API.DIRECT.GET."+st, "$JS.API.DIRECT.GET."+st+".>", "$JS.API.STREAM.MSG.GET."+st)
		}
		for _, b := range allBuckets {
			st := "KV_" + b
			p.Pub.Allow.Add("$JS.API.CONSUMER.CREATE."+st, "$JS.API.CONSUMER.CREATE."+st+".>", "$JS.API.CONSUMER.DELETE."+st+".*",
				"$JS.API.CONSUMER.MSG.NEXT."+st+".*", "$JS.ACK."+st+".>", "$JS.FC."+st+".>")
		}
		own := s.streams
		for _, v := range vendors {
			own = append(own, limiterStreams(v)...)
		}
		for _, st := range own {
			p.Pub.Allow.Add("$JS.API.STREAM.CREATE."+st, "$JS.API.STREAM.UPDATE."+st)
		}
		for _, c := range s.consumes {
			p.Pub.Allow.Add("$JS.API.CONSUMER.CREATE."+c, "$JS.API.CONSUMER.CREATE."+c+".>",
				"$JS.API.CONSUMER.DURABLE.CREATE."+c, "$JS.API.CONSUMER.MSG.NEXT."+c, "$JS.ACK."+c+".>")
			// The stream's anchor, which a process keeps for every work
			// queue it pulls from (natsx.KeepAnchor, natsx.AnchorSubject).
			stream, _, _ := strings.Cut(c, ".")
			p.Pub.Allow.Add(anchorPrefix + stream)
		}
		for _, b := range s.kv {
			p.Pub.Allow.Add("$KV." + b + ".>")
		}
		p.Sub.Allow.Add(ServiceInboxPrefix(name) + ".>")
		p.Sub.Allow.Add(s.core...)
		if s.responds {
			p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: responseWindow}
		}
		out[name] = p
	}
	return out
}

// OwnStreams are the name prefixes of the streams a service user creates
// itself: every process's vendor-limit windows, the intake's dedupe bucket
// and the edge's per-key counters. Only their owner needs them, and losing
// them loses nothing durable: the windows and the dedupe bucket are in
// memory, the counters expire within minutes.
func OwnStreams(user string) []string {
	own := []string{"LLM_LIMIT_"}
	switch user {
	case "intake":
		own = append(own, "KV_"+kvDedupe)
	case "edge":
		own = append(own, "KV_"+kvEdgeRate, "KV_"+kvEdgeInFlight)
	}
	return own
}

// ServiceUser is the credentials user a service process of kind name
// runs as ("executor" adds its vendor).
func ServiceUser(name, vendor string) string {
	if name == "executor" && vendor != "" {
		return "executor-" + vendor
	}
	return name
}

// LeafDomain is the central cluster's JetStream domain
// (deployments/nats/cluster.conf): a leaf node maps its clients' $JS.API
// to $JS.<LeafDomain>.API, the form its requests reach the cluster in.
const LeafDomain = "central"

// LeafUser is the user a remote site's leaf node connects to the central
// cluster as when the site runs vendor's executors.
func LeafUser(vendor string) string { return "leaf-" + vendor }

// LeafPermissions are what a remote site's leaf connection may do in the
// central cluster (from the leaf's side: publish is what it sends in,
// subscribe what it is sent): exactly what the executor user of vendor
// may (pull from its vendor's consumer, publish results, verdicts and
// telemetry, read the buckets, write the breakers and hedges), its
// JetStream API requests also in the domain form the leaf maps them to,
// and nothing delivered but that executor's private inbox. The site's
// executors run with executor-<vendor>.creds for that inbox (the leaf
// checks no credentials of its own clients).
func LeafPermissions(vendor string) jwt.Permissions {
	exec := ServicePermissions([]string{vendor})[ServiceUser("executor", vendor)]
	var p jwt.Permissions
	for _, s := range exec.Pub.Allow {
		p.Pub.Allow.Add(s)
		if rest, ok := strings.CutPrefix(s, "$JS.API."); ok {
			p.Pub.Allow.Add("$JS." + LeafDomain + ".API." + rest)
		}
	}
	p.Sub.Allow.Add(exec.Sub.Allow...)
	return p
}
