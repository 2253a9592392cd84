package pipeline

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchyard-llm/switchyard/pkg/natsx"
)

// ConsumerSettings are a request stage's durable consumer on the pipeline
// stream and its workers. The intake, router and gate configs embed it, so
// its variables keep each stage's prefix (SWITCHYARD_ROUTER_CONCURRENCY).
// The executors size theirs from the vendor's limit instead.
type ConsumerSettings struct {
	Concurrency   int           `envconfig:"CONCURRENCY" default:"64"`
	MaxDeliver    int           `envconfig:"MAX_DELIVER" default:"5"`
	AckWait       time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	MaxAckPending int           `envconfig:"MAX_ACK_PENDING" default:"2048"`
}

// Validate returns every problem with the settings and the durable name,
// each named by its variable under prefix (SWITCHYARD_ROUTER).
func (c ConsumerSettings) Validate(prefix, durable string) []error {
	var errs []error
	if durable == "" {
		errs = append(errs, errors.New(prefix+"_CONSUMER: required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New(prefix+"_CONCURRENCY: must be at least 1"))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, errors.New(prefix+"_MAX_DELIVER: must be at least 1"))
	}
	if err := natsx.ValidateAckWait(prefix+"_ACK_WAIT", c.AckWait); err != nil {
		errs = append(errs, err)
	}
	// Fewer messages pending than workers would leave workers idle for ever.
	if c.MaxAckPending < c.Concurrency {
		errs = append(errs, errors.New(prefix+"_MAX_ACK_PENDING: must be at least CONCURRENCY"))
	}
	return errs
}

// ConsumerConfig is the durable consumer these settings describe: explicit
// acks, reading the filters. One filter is set as FilterSubject, as the
// stages always have, so an existing consumer updates in place.
func (c ConsumerSettings) ConsumerConfig(durable, description string, filters ...string) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   description,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
	}
	if len(filters) == 1 {
		cc.FilterSubject = filters[0]
	} else {
		cc.FilterSubjects = filters
	}
	return cc
}
