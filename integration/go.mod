module github.com/switchyard-llm/switchyard/integration

go 1.26.8

require (
	github.com/switchyard-llm/switchyard/pkg v0.0.0
	github.com/switchyard-llm/switchyard/schemas v0.0.0
	github.com/switchyard-llm/switchyard/services/executor v0.0.0
	github.com/switchyard-llm/switchyard/services/gate v0.0.0
	github.com/switchyard-llm/switchyard/services/intake v0.0.0
	github.com/switchyard-llm/switchyard/services/ledger v0.0.0
	github.com/switchyard-llm/switchyard/services/router v0.0.0
	github.com/switchyard-llm/switchyard/services/sim v0.0.0
	github.com/switchyard-llm/switchyard/services/switchyard v0.0.0
)

require (
	github.com/ClickHouse/ch-go v0.74.0 // indirect
	github.com/ClickHouse/clickhouse-go/v2 v2.50.0 // indirect
	github.com/andybalholm/brotli v1.2.6 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-faster/city v1.0.1 // indirect
	github.com/go-faster/errors v0.7.1 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/paulmach/orb v0.13.0 // indirect
	github.com/pierrec/lz4/v4 v4.1.27 // indirect
	github.com/rs/zerolog v1.35.1 // indirect
	github.com/segmentio/asm v1.2.1 // indirect
	github.com/shopspring/decimal v1.5.0 // indirect
	go.opentelemetry.io/otel v1.47.0 // indirect
	go.opentelemetry.io/otel/trace v1.47.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace (
	github.com/switchyard-llm/switchyard/pkg => ../pkg
	github.com/switchyard-llm/switchyard/schemas => ../schemas
	github.com/switchyard-llm/switchyard/services/executor => ../services/executor
	github.com/switchyard-llm/switchyard/services/gate => ../services/gate
	github.com/switchyard-llm/switchyard/services/intake => ../services/intake
	github.com/switchyard-llm/switchyard/services/ledger => ../services/ledger
	github.com/switchyard-llm/switchyard/services/router => ../services/router
	github.com/switchyard-llm/switchyard/services/sim => ../services/sim
	github.com/switchyard-llm/switchyard/services/switchyard => ../services/switchyard
)
