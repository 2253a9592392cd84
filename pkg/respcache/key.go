package respcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard-llm/switchyard/pkg/envelope"
	"github.com/switchyard-llm/switchyard/pkg/policy"
)

// keyVersion prefixes every cache key and is hashed into it. Bump it when
// the canonical form changes: old entries then simply stop matching and age
// out through their TTL.
const keyVersion = "v1"

// Fingerprint hashes the parts of a route that change the answer a request
// gets: the strategy, the ordered chain of vendor/model targets and what
// happens when the quality gate fails (escalate, reject, degrade). Editing
// any of them yields a new fingerprint, so answers produced under the old
// policy are not served under the new one.
//
// Left out on purpose: the route name (Key hashes it separately), the match
// rules (they decide which route a request gets, and the route is in the
// key) and the retry policy (it changes timing, not the answer).
//
// The result is a 32-character hex string; nil yields "".
func Fingerprint(route *policy.Route) string {
	if route == nil {
		return ""
	}
	h := sha256.New()
	writeField(h, "route-fp/"+keyVersion)
	writeField(h, route.Strategy)
	writeField(h, route.OnQualityFail)
	writeInt(h, int64(len(route.Chain)))
	for _, t := range route.Chain {
		writeField(h, t.Vendor)
		writeField(h, t.Model)
	}
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

// Key returns the cache key of a request answered by the named route whose
// policy hashes to routeFingerprint (see Fingerprint). The key is
// "v1." followed by the hex SHA-256 of a canonical form of:
//
//   - the tenant: the cache is tenant-scoped, one tenant never reads
//     another's answers;
//   - the route name and routeFingerprint;
//   - the messages, in order: role and content, each trimmed of leading and
//     trailing whitespace (inner whitespace is kept: it can matter, in code
//     for instance);
//   - max_tokens and temperature (an absent temperature, meaning the
//     vendor default, differs from an explicit 0);
//   - response_format, re-encoded as canonical JSON (object keys sorted,
//     insignificant whitespace dropped, numbers kept as written);
//   - vendor_options, canonical JSON likewise;
//   - the request policy fields that may change which model answers:
//     quality, stakes and residency; and the pinned model, when set.
//
// Not included, because they do not change the answer: id, user,
// metadata, endpoint_tag, prompt_version, environment, reply_to,
// timeout_ms, and the policy's max_latency_ms, max_cost_usd and cache
// (limits checked before a vendor call; a hit costs nothing and is
// immediate). Note that endpoint_tag can select a route, but the route is
// in the key already.
//
// Every field is length-prefixed, so no two distinct inputs share a
// canonical form by concatenation. Key never fails: a JSON value that does
// not parse is hashed as its raw bytes (such a request cannot match a
// well-formed one).
func Key(req *envelope.Request, route, routeFingerprint string) string {
	h := sha256.New()
	writeField(h, "request/"+keyVersion)
	writeField(h, req.Tenant)
	writeField(h, route)
	writeField(h, routeFingerprint)

	writeInt(h, int64(len(req.Messages)))
	for _, m := range req.Messages {
		writeField(h, strings.TrimSpace(m.Role))
		writeField(h, strings.TrimSpace(m.Content))
	}

	writeInt(h, int64(req.MaxTokens))
	if req.Temperature == nil {
		writeField(h, "")
	} else {
		writeField(h, strconv.FormatFloat(*req.Temperature, 'g', -1, 64))
	}

	if req.ResponseFormat == nil {
		writeField(h, "")
	} else {
		raw, err := json.Marshal(req.ResponseFormat)
		if err != nil { // cannot happen: the fields are plain data
			raw = nil
		}
		writeField(h, "rf:"+string(canonicalJSON(raw)))
	}

	writeInt(h, int64(len(req.VendorOptions)))
	for _, k := range sortedKeys(req.VendorOptions) {
		writeField(h, k)
		writeField(h, string(canonicalJSON(req.VendorOptions[k])))
	}

	var pol envelope.RequestPolicy // no policy hashes like an empty one
	if req.Policy != nil {
		pol = *req.Policy
	}
	writeField(h, pol.Quality)
	writeField(h, pol.Stakes)
	writeField(h, pol.Residency)
	// Hashed only when set, so the keys of requests without it (every
	// request before it existed) stay what they were.
	if req.Model != "" {
		writeField(h, "model")
		writeField(h, req.Model)
	}

	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	buf := make([]byte, len(keyVersion)+1+hex.EncodedLen(len(sum)))
	n := copy(buf, keyVersion)
	buf[n] = '.'
	hex.Encode(buf[n+1:], sum[:])
	return string(buf)
}

// canonicalJSON re-encodes a JSON value with sorted object keys and no
// insignificant whitespace. Numbers keep their literal form (json.Number),
// so large integers such as seeds stay exact; "1" and "1.0" therefore
// differ, which can only cost a hit, never serve a wrong answer. Input
// that does not parse is returned as is.
func canonicalJSON(raw []byte) []byte {
	if len(raw) == 0 {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return raw
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps are encoded in key order
		return raw
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func writeField(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	_, _ = h.Write([]byte(s))
}

func writeInt(h hash.Hash, n int64) {
	var b [binary.MaxVarintLen64]byte
	_, _ = h.Write(b[:binary.PutVarint(b[:], n)])
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
