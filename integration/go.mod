module github.com/switchyard-llm/switchyard/integration

go 1.26.8

require (
	github.com/ClickHouse/clickhouse-go/v2 v2.50.0
	github.com/nats-io/nats.go v1.55.0
	github.com/prometheus/client_golang v1.25.0
	github.com/rs/zerolog v1.35.1
	github.com/switchyard-llm/switchyard/pkg v0.0.0
	github.com/switchyard-llm/switchyard/services/edge v0.0.0
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
	github.com/andybalholm/brotli v1.2.6 // indirect
	github.com/antithesishq/antithesis-sdk-go v0.8.0-default-no-op // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-faster/city v1.0.1 // indirect
	github.com/go-faster/errors v0.7.1 // indirect
	github.com/goccy/go-json v0.12.0 // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/kelseyhightower/envconfig v1.4.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/kylelemons/godebug v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/nats-io/jwt/v2 v2.8.2 // indirect
	github.com/nats-io/nats-server/v2 v2.15.2 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/paulmach/orb v0.13.0 // indirect
	github.com/pierrec/lz4/v4 v4.1.27 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	github.com/segmentio/asm v1.2.1 // indirect
	github.com/shopspring/decimal v1.5.0 // indirect
	github.com/switchyard-llm/switchyard/schemas v0.0.0 // indirect
	go.opentelemetry.io/otel v1.47.0 // indirect
	go.opentelemetry.io/otel/trace v1.47.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)

replace (
	github.com/switchyard-llm/switchyard/pkg => ../pkg
	github.com/switchyard-llm/switchyard/schemas => ../schemas
	github.com/switchyard-llm/switchyard/services/edge => ../services/edge
	github.com/switchyard-llm/switchyard/services/executor => ../services/executor
	github.com/switchyard-llm/switchyard/services/gate => ../services/gate
	github.com/switchyard-llm/switchyard/services/intake => ../services/intake
	github.com/switchyard-llm/switchyard/services/ledger => ../services/ledger
	github.com/switchyard-llm/switchyard/services/router => ../services/router
	github.com/switchyard-llm/switchyard/services/sim => ../services/sim
	github.com/switchyard-llm/switchyard/services/switchyard => ../services/switchyard
)
