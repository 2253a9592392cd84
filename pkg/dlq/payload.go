package dlq

import (
	"strconv"

	"github.com/nats-io/nats.go"
)

// HeaderTruncated marks a dead letter whose payload was cut to fit the DLQ;
// its value is the original payload size in bytes.
const HeaderTruncated = "Switchyard-Truncated"

// MaxPayloadBytes is the largest payload a dead letter keeps whole: the
// request payload limit. NATS refuses messages over 1 MiB, so a dead letter
// carrying a payload near that size could never be published (and its
// message would be redelivered forever).
const MaxPayloadBytes = 256 << 10

// TruncatedPayloadBytes is how much of a larger payload is kept: enough to
// see what it was.
const TruncatedPayloadBytes = 64 << 10

// CapPayload returns the payload a dead letter may carry. A payload over
// MaxPayloadBytes is cut to its first TruncatedPayloadBytes and hdr gets
// HeaderTruncated with the original size. Such a dead letter cannot be
// replayed.
func CapPayload(data []byte, hdr nats.Header) []byte {
	if len(data) <= MaxPayloadBytes {
		return data
	}
	hdr.Set(HeaderTruncated, strconv.Itoa(len(data)))
	return data[:TruncatedPayloadBytes]
}
